"""The RQ job class of our workers: a job carries its event's attempt count and handler progress
in its own hash, and a run's last writes go with RQ's end-of-run round trip (docs/design.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from rq.exceptions import DeserializationError
from rq.executions import Execution
from rq.job import Job
from rq.utils import decode_redis_hash

from receiver.jobs import DISPATCH_FUNCTION, SERIALIZER, JobArgs

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

#: Our fields in the job hash: runs started so far, and the names of the handlers that completed (JSON list).
ATTEMPTS_FIELD = "kayle_attempts"
DONE_FIELD = "kayle_done"
#: Job meta keys of the last failed run (handler names and exception types only): read by ``failed list``.
META_FAILED_HANDLERS = "kayle_failed_handlers"
META_ERROR_TYPES = "kayle_error_types"


class UnsafeJob(DeserializationError):
    """A job in our queue that is not an event job this service wrote: it is failed, and nothing in it runs."""


class KayleJob(Job):
    """An RQ job with :attr:`attempts`, :attr:`attempt` and :attr:`done` read and written with its own hash.

    Whatever its hash says, a KayleJob reads its data and meta as JSON, runs only the dispatch function,
    and has no callbacks, webhooks or dependencies: writing to Redis is not a way to run code in a worker.
    """

    #: Runs started before this one (as stored when the job was fetched).
    attempts: int = 0
    #: Handlers that completed in earlier runs.
    done: frozenset[str] = frozenset()
    #: Writes this run left for its next round trip (:meth:`defer`).
    _deferred: list[Callable[[Pipeline], object]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER  # whoever fetches it: never pickle
        super().__init__(*args, **kwargs)
        self._deferred = []

    @classmethod
    def load(cls, id: str, connection: Redis) -> KayleJob:
        """``fetch``, typed: raises ``NoSuchJobError`` when there is no such job."""
        return cast(KayleJob, cls.fetch(id, connection=connection, serializer=SERIALIZER))

    @property
    def attempt(self) -> int:
        """This run's number, which RQ's start transaction counts."""
        return self.attempts + 1

    def restore(self, raw_data: Any) -> Any:
        restored = super().restore(raw_data)
        # Nothing read from Redis chooses code to run or a URL to call: our jobs have none of these.
        self._success_callback_name = self._failure_callback_name = self._stopped_callback_name = None
        self.webhooks = []
        self._dependency_ids = []
        fields = decode_redis_hash(raw_data)
        self.attempts = _whole_number(fields.get(ATTEMPTS_FIELD))
        self.done = _names(fields.get(DONE_FIELD))
        return restored

    def _deserialize_data(self) -> None:
        super()._deserialize_data()  # type: ignore[no-untyped-call]
        if self._func_name != DISPATCH_FUNCTION or self._instance is not None or self._args:
            raise UnsafeJob(f"job {self.id[:80]!r} is not an event job of kayle-webhooks; it was not run")
        try:
            JobArgs(**cast(dict[str, Any], self._kwargs))
        except TypeError:
            raise UnsafeJob(f"job {self.id[:80]!r} does not carry an event's arguments; it was not run") from None

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        super().prepare_for_execution(worker_name, pipeline)
        pipeline.hincrby(self.key, ATTEMPTS_FIELD, 1)
        if META_FAILED_HANDLERS in self.meta or META_ERROR_TYPES in self.meta:  # a rerun: that failure is over
            self.meta.pop(META_FAILED_HANDLERS, None)
            self.meta.pop(META_ERROR_TYPES, None)
            self.save_meta_on(pipeline)

    def record_done(self, names: set[str], pipeline: Pipeline) -> None:
        """Store the handlers completed so far (``done`` plus this run's) on ``pipeline``."""
        pipeline.hset(self.key, DONE_FIELD, json.dumps(sorted(self.done | names)))

    def save_meta_on(self, pipeline: Pipeline) -> None:
        """What ``save_meta()`` writes, on ``pipeline``."""
        pipeline.hset(self.key, "meta", self.serializer.dumps(self.meta))

    def record_failure(self, handlers: list[str], error_types: list[str]) -> None:
        """Keep this run's failing handlers and their exception types in the meta, sent with the run's writes."""
        self.meta[META_FAILED_HANDLERS] = handlers
        self.meta[META_ERROR_TYPES] = error_types
        self.defer(self.save_meta_on)

    def last_failure(self) -> tuple[list[str], list[str]]:
        """The failing handlers and their error types, as the last failed run recorded them."""
        return list(self.meta.get(META_FAILED_HANDLERS, [])), list(self.meta.get(META_ERROR_TYPES, []))

    def defer(self, write: Callable[[Pipeline], object]) -> None:
        """Leave ``write`` for this run's next round trip: :meth:`flush`, or else RQ's end-of-run heartbeat."""
        self._deferred.append(write)

    def flush(self) -> None:
        """Send the deferred writes now, in one transaction."""
        with self.connection.pipeline() as pipe:
            self._send_deferred(pipe)

    def heartbeat(self, timestamp: datetime, ttl: int, pipeline: Pipeline | None = None, xx: bool = False) -> None:
        if pipeline is not None or not self._deferred:
            super().heartbeat(timestamp, ttl, pipeline=pipeline, xx=xx)
            return
        # RQ's heartbeat once the job function has returned or raised (Worker.handle_execution_ended): the run's
        # deferred writes go with it, in one transaction, before RQ records the job's success or failure.
        with self.connection.pipeline() as pipe:
            super().heartbeat(timestamp, ttl, pipeline=pipe, xx=xx)
            self._send_deferred(pipe)

    def _send_deferred(self, pipe: Pipeline) -> None:
        for write in self._deferred:
            write(pipe)
        pipe.execute()
        self._deferred = []  # only once sent: if Redis failed, the next round trip (RQ's failure path) tries again

    def delete(
        self, pipeline: Pipeline | None = None, remove_from_queue: bool = True, delete_dependents: bool = False
    ) -> None:
        try:
            super().delete(pipeline=pipeline, remove_from_queue=remove_from_queue, delete_dependents=delete_dependents)
        except ValueError:
            # RQ 3.0.0: an execution whose worker was killed stays listed in the job's execution registry for
            # about 60 s after its record expired, and deleting the job in that window fails (Execution.fetch
            # raises ValueError), which would leave a finished job unfinished. Unlist such executions, delete again.
            if not _drop_dead_executions(self, self.connection):
                raise
            super().delete(pipeline=pipeline, remove_from_queue=remove_from_queue, delete_dependents=delete_dependents)


def _whole_number(raw: bytes | None) -> int:
    try:
        return max(0, int(raw or 0))
    except ValueError:
        return 0


def _names(raw: bytes | None) -> frozenset[str]:
    """Handler names stored as a JSON list; anything else counts as none (the handlers run again)."""
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        return frozenset()
    return frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else frozenset()


def _drop_dead_executions(job: Job, redis: Redis) -> bool:
    """Unlist the executions of ``job`` whose record is gone; ``True`` if there were any."""
    registry = job.execution_registry
    dropped = False
    for raw in redis.zrange(registry.key, 0, -1):
        execution_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not redis.exists(Execution(id=execution_id, job_id=job.id, connection=redis).key):
            redis.zrem(registry.key, execution_id)
            dropped = True
    return dropped
