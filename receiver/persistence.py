"""Is Redis keeping what we acknowledge? An unpersisted Redis loses accepted events on restart; one that may
evict keys drops dedup markers (events handled twice) and jobs (events lost) when its memory is full."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ResponseError

WARNING = "Redis persistence is off: a restart loses events already acknowledged to Kayle"
FIX = "turn on AOF: `appendonly yes` in redis.conf (or CONFIG SET appendonly yes)"


@dataclass(frozen=True)
class Persistence:
    aof: bool | None  # None: could not be read (CONFIG not allowed, as on some managed services)
    rdb: bool | None

    @property
    def off(self) -> bool:
        return self.aof is False and not self.rdb

    @property
    def summary(self) -> str:
        if self.aof is None:
            return "unknown (CONFIG is not allowed)"
        on = [name for name, enabled in (("AOF", self.aof), ("RDB snapshots", self.rdb)) if enabled]
        return ", ".join(on) if on else "off"


def read_persistence(client: Redis) -> Persistence:
    try:
        aof = client.config_get("appendonly").get("appendonly") == "yes"
        rdb = bool((client.config_get("save").get("save") or "").strip())
    except ResponseError:
        try:
            info = client.info("persistence")
        except ResponseError:
            return Persistence(None, None)
        return Persistence(bool(info.get("aof_enabled")), None)
    return Persistence(aof, rdb)


_NO_EVICTION = "noeviction"
_EVICTION_FIX = (
    "set `maxmemory-policy noeviction` in redis.conf (or CONFIG SET maxmemory-policy noeviction); "
    "KAYLE_MAX_PENDING_EVENTS keeps the queue from filling Redis"
)
_EVICTION_UNKNOWN = "Redis maxmemory-policy could not be read (CONFIG is not allowed)"
_EVICTION_UNKNOWN_FIX = (
    "verify in your Redis provider's settings that maxmemory-policy is noeviction "
    "(managed Redis often defaults to volatile-lru, which can evict markers and jobs)"
)


@dataclass(frozen=True)
class Finding:
    """What to tell the operator about Redis; ``loses``: as it is, events may be lost or handled twice."""

    loses: bool
    text: str
    fix: str


def eviction_finding(policy: str | None) -> Finding | None:
    """About ``maxmemory-policy`` (``None``: it could not be read); nothing to say when it is noeviction."""
    if policy is None:
        return Finding(False, _EVICTION_UNKNOWN, _EVICTION_UNKNOWN_FIX)
    if policy != _NO_EVICTION:
        text = (
            f"Redis maxmemory-policy is {policy}, not noeviction: when its memory fills, Redis may evict dedup "
            "markers (events handled twice) and queued jobs (acknowledged events lost)"
        )
        return Finding(True, text, _EVICTION_FIX)
    return None


def read_eviction_policy(client: Redis) -> str | None:
    """Redis's ``maxmemory-policy``; ``None`` where CONFIG is not allowed (managed Redis, ACL)."""
    try:
        return str(client.config_get("maxmemory-policy").get("maxmemory-policy"))
    except ResponseError:
        return None


async def read_eviction_policy_async(client: AsyncRedis) -> str | None:
    try:
        found = await client.config_get("maxmemory-policy")
    except ResponseError:
        return None
    return str(found.get("maxmemory-policy"))
