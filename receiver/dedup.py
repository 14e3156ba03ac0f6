"""Dedup markers in compact form: an event id's 63-bit digest, kept in small sets of integers that Redis
stores as intsets (8 bytes an entry), the sets bucketed by time period and by another part of the digest.

The Lua functions here are shared by the intake script (``receiver/intake.py``), ``seen`` and ``forget``;
docs/design.md explains the layout and its arithmetic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

#: The hash recording, per time period, the bucket levels its markers use and how many it holds.
PERIODS_KEY = "kayle:seen:periods"

#: Lua that defines ``seen(digest, spread)``, ``mark(digest, spread)`` and ``unmark(digest, spread)`` and the
#: current period; %(ttl)s is the dedup window in seconds, %(period)s the period length for a new store.
LUA_PRELUDE = """
local PERIODS = '%(periods_key)s'
local TTL = %(ttl)s
local STEP, FIRST, TOP, FILL = 4, 6, 24, 256
local PERIOD = tonumber(redis.call('HGET', PERIODS, 'seconds')) or %(period)s
local NOW = tonumber(redis.call('TIME')[1])
local CURRENT = math.floor(NOW / PERIOD)
local OLDEST = CURRENT - math.ceil(TTL / PERIOD) - 1
local LEVELS = {}
do
  local fields = {}
  for p = OLDEST, CURRENT do
    fields[#fields + 1] = p .. ':first'
    fields[#fields + 1] = p .. ':level'
  end
  local found = redis.call('HMGET', PERIODS, unpack(fields))
  for i = 0, CURRENT - OLDEST do
    if found[2 * i + 1] then
      LEVELS[OLDEST + i] = {tonumber(found[2 * i + 1]), tonumber(found[2 * i + 2])}
    end
  end
end
local function bucket(p, level, spread)
  return 'kayle:seen:' .. p .. ':' .. level .. ':' .. string.format('%%d', spread %% (2 ^ level))
end
local function each_bucket(spread, visit)
  for p = OLDEST, CURRENT do
    local levels = LEVELS[p]
    if levels then
      for level = levels[1], levels[2], STEP do
        if visit(bucket(p, level, spread)) then return true end
      end
    end
  end
  return false
end
local function seen(digest, spread)
  return each_bucket(spread, function(key) return redis.call('SISMEMBER', key, digest) == 1 end)
end
local function unmark(digest, spread)
  local removed = 0
  each_bucket(spread, function(key) removed = removed + redis.call('SREM', key, digest) end)
  return removed
end
local function mark(digest, spread)
  redis.call('HSETNX', PERIODS, 'seconds', PERIOD)  -- the first marker fixes the period length for good
  local levels = LEVELS[CURRENT]
  if not levels then
    -- a new period starts at the level the latest one reached; periods out of the window are forgotten
    local level = FIRST
    for p = CURRENT - 1, OLDEST, -1 do
      if LEVELS[p] then level = LEVELS[p][2] break end
    end
    for _, field in ipairs(redis.call('HKEYS', PERIODS)) do
      local p = tonumber(string.match(field, '^(-?%%d+):'))
      if p and p < OLDEST then redis.call('HDEL', PERIODS, field) end
    end
    redis.call('HSET', PERIODS, CURRENT .. ':first', level, CURRENT .. ':level', level)
    levels = {level, level}
    LEVELS[CURRENT] = levels
  end
  local key = bucket(CURRENT, levels[2], spread)
  if redis.call('SADD', key, digest) == 1 and redis.call('SCARD', key) == 1 then
    redis.call('EXPIREAT', key, (CURRENT + 1) * PERIOD + TTL)
  end
  local count = redis.call('HINCRBY', PERIODS, CURRENT .. ':count', 1)
  if count > FILL * 2 ^ levels[2] and levels[2] + STEP <= TOP then
    -- buckets hold FILL entries on average: open the next level, 2^STEP times as many buckets
    levels[2] = levels[2] + STEP
    redis.call('HSET', PERIODS, CURRENT .. ':level', levels[2])
  end
end
"""

_SEEN = """
local found = {}
for i = 1, #ARGV, 2 do
  found[#found + 1] = seen(ARGV[i], tonumber(ARGV[i + 1])) and 1 or 0
end
return found
"""

_FORGET = """
return unmark(ARGV[1], tonumber(ARGV[2]))
"""


@dataclass(frozen=True)
class Digest:
    """What the store keeps of an event id: ``value`` (a 63-bit integer, in decimal) and ``spread`` (32 other
    bits of the same SHA-256, which choose the bucket)."""

    value: str
    spread: int

    @classmethod
    def of(cls, event_id: str) -> Digest:
        sha = hashlib.sha256(event_id.encode("utf-8")).digest()
        return cls(str(int.from_bytes(sha[:8], "big") >> 1), int.from_bytes(sha[8:12], "big"))


def prelude(ttl_seconds: int) -> str:
    """:data:`LUA_PRELUDE` for a window of ``ttl_seconds``; a new store gets periods of a tenth of it."""
    return LUA_PRELUDE % {"periods_key": PERIODS_KEY, "ttl": int(ttl_seconds), "period": max(1, ttl_seconds // 10)}


def seen(client: Redis, ttl_seconds: int, event_ids: Sequence[str]) -> set[str]:
    """The events among ``event_ids`` whose marker is in the store (accepted within the window)."""
    if not event_ids:
        return set()
    digests = [Digest.of(event_id) for event_id in event_ids]
    arguments = [part for d in digests for part in (d.value, d.spread)]
    found = client.eval(prelude(ttl_seconds) + _SEEN, 0, *arguments)
    return {event_id for event_id, hit in zip(event_ids, found, strict=True) if hit}


def forget(client: Redis, ttl_seconds: int, event_id: str) -> bool:
    """Drop the event's marker; ``False`` if it had none."""
    digest = Digest.of(event_id)
    return bool(client.eval(prelude(ttl_seconds) + _FORGET, 0, digest.value, digest.spread))
