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

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from rq.job import Job
from rq.queue import Queue

from receiver.errors import Unavailable
from receiver.jobs import Delivery, JobTemplate, job_id, marker_key
from receiver.settings import Settings

Outcome = Literal["accepted", "duplicate"]

_SCRIPT = """
-- KEYS: marker, job hash, queue list, set of queues
-- ARGV: job id, marker value, creation time, job data, job description
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
  redis.call('LREM', KEYS[3], 0, ARGV[1])
end
redis.call('HSET', KEYS[2], 'created_at', ARGV[3], 'enqueued_at', ARGV[3], 'data', ARGV[4],
  'description', ARGV[5], %(constant_fields)s)
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'EX', %(dedup_ttl)s)
return 1
"""


def _lua_string(value: str | int | bytes) -> str:
    """A Lua string literal for any bytes (every byte but letters and digits as a decimal escape)."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):  # str subclasses too (RQ's JobStatus): their value, as redis-py sends it
        raw = value.encode("utf-8")
    else:
        raw = str(value).encode("utf-8")
    return '"' + "".join(chr(b) if chr(b).isalnum() else f"\\{b:03d}" for b in raw) + '"'


def intake_script(settings: Settings, template: JobTemplate) -> str:
    """The script for these settings: the job fields every event shares are written into its text,
    so a delivery sends only its own five values (fewer arguments to encode on every request)."""
    constants = ", ".join(
        f"{_lua_string(name)}, {_lua_string(value)}" for name, value in template.constant_fields.items()
    )
    return _SCRIPT % {"constant_fields": constants, "dedup_ttl": int(settings.dedup_ttl_seconds)}


class Intake:
    """Stores accepted deliveries; one per receiver process."""

    def __init__(self, redis: AsyncRedis, settings: Settings) -> None:
        self._template = JobTemplate(settings)
        self._script = redis.register_script(intake_script(settings, self._template))
        self._queue_key = Queue.redis_queue_namespace_prefix + settings.queue
        self._queues_key = Queue.redis_queues_keys

    async def store(self, delivery: Delivery) -> Outcome:
        """Write marker and job atomically; raise :class:`Unavailable` on any Redis error."""
        fields = self._template.per_event_fields(delivery)
        job_key = Job.redis_job_namespace_prefix + job_id(delivery.event_id)
        keys = [marker_key(delivery.event_id), job_key, self._queue_key, self._queues_key]
        args: list[str | bytes | int] = [
            job_id(delivery.event_id),
            int(delivery.received_at),
            fields["created_at"],
            fields["data"],
            fields["description"],
        ]
        try:
            created = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable() from exc
        return "accepted" if created == 1 else "duplicate"
