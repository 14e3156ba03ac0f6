"""Intake: the dedup marker and the RQ job, written in one atomic step.

One Lua script checks the marker and, for a new event, writes the job hash,
registers the queue, pushes the job id and sets the marker, in that order. Redis
runs a script without interleaving other clients, so any number of concurrent
copies of one event yield exactly one job. The script checks the types of every
key it writes before writing any, so a runtime error cannot stop it halfway; the
marker is written last, so even then no marker can exist without its job.
"""

from __future__ import annotations

from typing import Literal

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from rq.queue import Queue

from receiver.errors import Unavailable
from receiver.jobs import Delivery, build_job, marker_key
from receiver.settings import Settings

Outcome = Literal["accepted", "duplicate"]

INTAKE_SCRIPT = """
-- KEYS: marker, job hash, queue list, set of queues
-- ARGV: marker ttl, job id, queue key, marker value, job hash field/value pairs...
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local expected = {'none', 'hash', 'list', 'set'}
for i = 2, 4 do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= expected[i] then
    return redis.error_reply('WRONGTYPE intake key ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
if redis.call('DEL', KEYS[2]) == 1 then
  -- a job left from a forgotten event: replace it, and never queue its id twice
  redis.call('LREM', KEYS[3], 0, ARGV[2])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[1])
return 1
"""


class Intake:
    """Stores accepted deliveries; one per receiver process."""

    def __init__(self, redis: AsyncRedis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._script = redis.register_script(INTAKE_SCRIPT)
        # RQ builds job hashes from a synchronous connection object; it is never used for I/O here.
        self._job_connection = Redis()
        self._queue_key = Queue.redis_queue_namespace_prefix + settings.queue
        self._queues_key = Queue.redis_queues_keys

    async def store(self, delivery: Delivery) -> Outcome:
        """Write marker and job atomically; raise :class:`Unavailable` on any Redis error."""
        job = build_job(delivery, self._settings, self._job_connection)
        fields: list[str | bytes | int | float] = []
        for name, value in job.to_dict().items():
            fields += [name, value]
        keys = [marker_key(delivery.event_id), job.key, self._queue_key, self._queues_key]
        args = [self._settings.dedup_ttl_seconds, job.id, self._queue_key, int(delivery.received_at), *fields]
        try:
            created = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable() from exc
        return "accepted" if created == 1 else "duplicate"
