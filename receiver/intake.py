"""Intake: an event's dedup marker and its RQ job, written in one atomic step (a Lua script).

Deliveries that arrive while a batch of script calls is on its way to Redis go together in the
next pipeline; each call stays atomic on its own (docs/design.md). With ``KAYLE_REDIS_MIN_REPLICAS``
the pipeline ends with one ``WAIT`` for the whole batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Literal

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoScriptError, RedisError
from rq.job import Job
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry

from receiver import dedup
from receiver.errors import NotReplicated, QueueFull, Unavailable
from receiver.jobs import JobArgs, JobTemplate, job_id
from receiver.logs import log
from receiver.settings import Settings

logger = logging.getLogger("kayle.receiver")

Outcome = Literal["accepted", "duplicate"]

_SCRIPT = """
-- KEYS: job hash, queue list, set of queues, scheduled retries
-- ARGV: job id, marker digest, marker spread, creation time, job data, job description
%(dedup)s
local expected = {'hash', 'list', 'set', 'zset'}
for i = 1, 4 do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= expected[i] then
    return redis.error_reply('WRONGTYPE intake key ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 or seen(ARGV[2], tonumber(ARGV[3])) then
  return 0  -- its job still exists (queued, running, scheduled or failed), or it was handled within the window
end
if %(max_pending)s > 0 and redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[4]) >= %(max_pending)s then
  return 2
end
redis.call('HSET', KEYS[1], 'created_at', ARGV[4], 'enqueued_at', ARGV[4], 'data', ARGV[5],
  'description', ARGV[6], %(constant_fields)s)
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
mark(ARGV[2], tonumber(ARGV[3]))
return 1
"""
ACCEPTED, DUPLICATE, QUEUE_FULL = 1, 0, 2

#: Incremented before each WAIT: the write moves the connection's replication offset past every write Redis ran
#: before it, so the WAIT also covers the first copy of an event this batch found a duplicate of.
WAIT_PROBE_KEY = "kayle:replication:probe"


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
    so a delivery sends only its own values (fewer arguments to encode on every request)."""
    constants = ", ".join(
        f"{_lua_string(name)}, {_lua_string(value)}" for name, value in template.constant_fields.items()
    )
    return _SCRIPT % {
        "dedup": dedup.prelude(settings.dedup_ttl_seconds),
        "max_pending": int(settings.max_pending_events),
        "constant_fields": constants,
    }


# The script's four keys, then its six arguments.
_Call = tuple[str, str, str, str, str, str, int, str | bytes, str | bytes, str | bytes]
_KEYS = 4


class Intake:
    """Stores accepted deliveries; one per receiver process (and event loop)."""

    def __init__(self, redis: AsyncRedis, settings: Settings) -> None:
        self._redis = redis
        self._template = JobTemplate(settings)
        self._script = intake_script(settings, self._template)
        self._max_pending = settings.max_pending_events
        self._sha = hashlib.sha1(self._script.encode("utf-8")).hexdigest()  # noqa: S324 (Redis names scripts so)
        self._queue_key = Queue.redis_queue_namespace_prefix + settings.queue
        self._queues_key = Queue.redis_queues_keys
        self._scheduled_key = ScheduledJobRegistry.key_template.format(settings.queue)
        self._full = False  # the last intake found the queue full: say so once, and once again when it is not
        self._min_replicas = settings.redis_min_replicas
        self._replica_timeout_ms = settings.redis_replica_timeout_ms
        self._unreplicated = False  # the last batch was not confirmed by enough replicas (logged on change)
        self._waiting: list[tuple[_Call, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, args: JobArgs) -> Outcome:
        """Write marker and job atomically; raise :class:`Unavailable` on any Redis error and
        :class:`QueueFull` when the pending events are at ``KAYLE_MAX_PENDING_EVENTS``."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((self._call(args), answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())
        reply = await answer
        if reply != DUPLICATE:  # a duplicate says nothing about room in the queue
            self._note_fullness(reply == QUEUE_FULL)
        if reply == QUEUE_FULL:
            raise QueueFull(self._max_pending)
        return "accepted" if reply == ACCEPTED else "duplicate"

    def _note_fullness(self, full: bool) -> None:
        if full == self._full:
            return
        self._full = full
        if full:
            log(logger, logging.WARNING, "the queue is full: new events are answered 503 queue_full until workers "
                "catch up (Kayle retries them)", max_pending_events=self._max_pending)
        else:
            log(logger, logging.INFO, "the queue has room again: new events are accepted")

    def _call(self, args: JobArgs) -> _Call:
        """The script's keys and arguments for ``args``."""
        fields = self._template.per_event_fields(args)
        event_job_id = job_id(args.event_id)
        digest = dedup.Digest.of(args.event_id)
        return (
            Job.redis_job_namespace_prefix + event_job_id,
            self._queue_key,
            self._queues_key,
            self._scheduled_key,
            event_job_id,
            digest.value,
            digest.spread,
            fields["created_at"],
            fields["data"],
            fields["description"],
        )

    async def _write_batches(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._write(batch)
        finally:
            self._writer = None
            # Only when a write was interrupted (shutdown): no caller may wait for a batch that will not come.
            stranded, self._waiting = self._waiting, []
            _settle(stranded, [None] * len(stranded))

    async def _write(self, batch: list[tuple[_Call, asyncio.Future[int]]]) -> None:
        """Run the script once per call of ``batch`` and settle every caller's future, whatever happens."""
        try:
            replies = await self._run([call for call, _ in batch])
        except Exception as exc:
            if not isinstance(exc, (RedisError, OSError)):
                log(logger, logging.ERROR, "intake failed unexpectedly; answering 503", exception=type(exc).__name__)
            replies = [exc] * len(batch)
        except BaseException:  # cancelled (shutdown): nobody may wait for this batch
            _settle(batch, [None] * len(batch))
            raise
        _settle(batch, replies)

    async def _run(self, calls: list[_Call]) -> list[object]:
        replies, replicas = await self._pipeline(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:  # Redis restarted or its scripts were flushed: load ours, run those calls again
            await self._redis.script_load(self._script)
            again, replicas = await self._pipeline([calls[i] for i in missing])  # its WAIT covers the first run too
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        if self._min_replicas:
            self._note_replication(replicas)
            if not isinstance(replicas, int):
                return [replicas if isinstance(reply, int) else reply for reply in replies]
            if replicas < self._min_replicas:
                short = NotReplicated(self._min_replicas)
                return [short if reply in (ACCEPTED, DUPLICATE) else reply for reply in replies]
        return replies

    async def _pipeline(self, calls: list[_Call]) -> tuple[list[object], object]:
        """The script's replies for ``calls`` and, with ``KAYLE_REDIS_MIN_REPLICAS``, the replicas ``WAIT``
        counted (on the same connection, so after these writes)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(self._sha, _KEYS, *call)
            if self._min_replicas:
                pipe.incr(WAIT_PROBE_KEY)
                pipe.wait(self._min_replicas, self._replica_timeout_ms)
            replies: list[object] = await pipe.execute(raise_on_error=False)
        if self._min_replicas:
            return replies[: len(calls)], replies[-1]
        return replies, None

    def _note_replication(self, replicas: object) -> None:
        short = not isinstance(replicas, int) or replicas < self._min_replicas
        if short == self._unreplicated:
            return
        self._unreplicated = short
        if short:
            log(logger, logging.WARNING, "Redis replicas did not confirm the events in time: they are answered 503 "
                "not_replicated until enough replicas are back (Kayle retries them)",
                min_replicas=self._min_replicas, replicas=replicas if isinstance(replicas, int) else None)
        else:
            log(logger, logging.INFO, "Redis replicas confirm the events again", min_replicas=self._min_replicas)


def _settle(batch: list[tuple[_Call, asyncio.Future[int]]], replies: list[object]) -> None:
    for (_, answer), reply in zip(batch, replies, strict=True):
        if answer.done():  # its request was cancelled (client gone); the event may be stored all the same
            continue
        if isinstance(reply, int):
            answer.set_result(reply)
        elif isinstance(reply, NotReplicated):
            answer.set_exception(NotReplicated(reply.wanted))  # one exception per caller
        else:
            unavailable = Unavailable()
            unavailable.__cause__ = reply if isinstance(reply, BaseException) else None
            answer.set_exception(unavailable)
