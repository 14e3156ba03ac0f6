"""Is Redis persisting what we acknowledge? An unpersisted Redis loses accepted events on restart."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
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
