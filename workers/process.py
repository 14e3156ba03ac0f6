"""``kayle-webhooks worker``: RQ workers with the partner's handlers loaded and the scheduler on.

:class:`Timing` derives RQ's heartbeat and maintenance intervals from ``KAYLE_ABANDONED_JOB_SECONDS``, so
a job abandoned by a killed worker runs again within about that long (docs/design.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.utils import now as rq_now
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from receiver import error_reports, jwe, logs, tracing
from receiver.connections import display_url, sync_redis
from receiver.jobs import SERIALIZER
from receiver.logs import log
from receiver.settings import ConfigError, Settings, load_config
from workers import dispatch
from workers.jobclass import KayleJob
from workers.plugins import load_handlers, unknown_type_warnings
from workers.registry import Registry

logger = logging.getLogger("kayle.worker")


#: How long a work horse waits, at most, for its spans and error reports to be sent before it exits.
HORSE_FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class Timing:
    monitoring: int
    grace: int
    maintenance: int

    @classmethod
    def for_seconds(cls, abandoned_after: int) -> Timing:
        return cls(
            monitoring=max(1, abandoned_after // 6),
            grace=max(2, abandoned_after // 3),
            maintenance=max(1, abandoned_after // 3),
        )


class KayleSimpleWorker(SimpleWorker):
    """RQ's in-process worker, without RQ's per-job "result discarded" line (results are never kept)."""

    log_result_lifespan = False


class KayleWorker(Worker):
    """RQ's forking worker whose started-job entries expire ``grace`` seconds after a missed heartbeat."""

    log_result_lifespan = False

    def __init__(self, *args: Any, heartbeat_grace: int = 60, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_grace = heartbeat_grace

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            if self.is_horse:  # os._exit follows, which runs no atexit hook: send this job's spans and reports now
                tracing.flush(HORSE_FLUSH_SECONDS)
                error_reports.flush(HORSE_FLUSH_SECONDS)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        interval = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(max(interval, 1)) + self.heartbeat_grace


def run(*, burst: bool, simple: bool, processes: int) -> None:
    """Load configuration and handlers, then work until stopped (or, with ``burst``, until the queue is empty)."""
    if processes < 1:
        raise ConfigError("--processes: must be at least 1")
    config = load_config(need_secrets=False)
    settings = config.settings
    logs.configure(settings.log_format, settings.log_level)
    error_reports.setup(settings, "worker")
    tracing.setup("kayle-webhooks-worker")  # each process builds its exporters at its first span, after any fork
    registry = load_handlers(settings)
    if not len(registry):
        raise ConfigError(
            "KAYLE_HANDLERS: no handlers found; install a plugin (entry point kayle_webhooks.handlers) "
            "or list your handler modules in KAYLE_HANDLERS"
        )
    dispatch.configure(dispatch.Runtime(settings, config.keyring, registry))
    jwe.warm_up(config.keyring)  # before any work horse is forked
    _log_start(settings, registry, processes=processes, simple=simple, burst=burst)
    for warning, fix in config.keyring.warnings:
        log(logger, logging.WARNING, warning, fix=fix)
    connection = _connect(settings)
    factory = worker_factory(settings, simple=simple)
    if processes > 1:
        pool = WorkerPool(
            [settings.queue],
            connection=connection,
            num_workers=processes,
            worker_class=cast(Any, factory),
            job_class=KayleJob,  # the pool passes its own job_class to each worker, over the factory's
            queue_class=queue_class(Timing.for_seconds(settings.abandoned_job_seconds).grace),
        )
        pool.start(burst=burst, logging_level=settings.log_level)
    else:
        _work_through_outages(factory, settings, connection, burst=burst)


def _work_through_outages(
    factory: Callable[..., BaseWorker], settings: Settings, connection: Redis, *, burst: bool
) -> None:
    """Work until stopped; a worker that quits because Redis went away (a failover, a restart) is replaced as
    soon as Redis, or the primary the sentinels name, answers again (RQ's worker gives up on most Redis errors)."""
    while True:
        worker = factory([settings.queue], connection=connection)
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
            failure = "the worker stopped on an error"
        except (RedisError, OSError) as exc:
            failure = type(exc).__name__
        if burst or _stop_was_requested(worker):
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # RQ's handlers expect a running worker
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log(logger, logging.WARNING, "lost Redis; working again as soon as it answers", cause=failure)
        _wait_for_redis(connection)
        _retire(worker)
        log(logger, logging.INFO, "Redis answers again; worker starting")


def _retire(worker: BaseWorker) -> None:
    """Stop what the lost worker left running: its command listener (a thread that would retry for ever) and its
    scheduler, whose lock a failover carries over to the new primary: freed, the next worker's scheduler fires
    retries at once, not after the lock's minute runs out."""
    if worker.pubsub_thread is not None:
        worker.pubsub_thread.stop()
    if worker.scheduler is None:
        return
    worker.stop_scheduler()  # type: ignore[no-untyped-call]
    with contextlib.suppress(RedisError, OSError):  # if not, the lock expires by itself
        worker.scheduler.release_locks()  # type: ignore[no-untyped-call]


def _stop_was_requested(worker: BaseWorker) -> bool:
    """SIGTERM or SIGINT reached the worker (RQ records when, idle or busy)."""
    return getattr(worker, "_shutdown_requested_date", None) is not None


def _wait_for_redis(connection: Redis) -> None:
    """Until Redis answers; a pause first, so that a worker that keeps stopping on some other error does not spin."""
    pause = 0.5
    while True:
        time.sleep(pause)
        try:
            connection.ping()
            return
        except (RedisError, OSError):
            pause = min(pause * 2, 5.0)


def queue_class(stranded_after: int) -> type[Queue]:
    """RQ's queue, except that a job stranded between the queue and the running jobs (dequeued, then the worker or
    the Redis primary died before it was recorded as started) runs again after ``stranded_after`` seconds, not RQ's
    fixed minute: after a failover, a job whose dequeue reached the replica but not its start did not."""

    class StrandedAfter(IntermediateQueue):
        def should_be_cleaned_up(self, job_id: str) -> bool:
            first_seen = self.get_first_seen(job_id)
            return first_seen is not None and (rq_now() - first_seen).total_seconds() > stranded_after

    class KayleQueue(Queue):
        @property
        def intermediate_queue(self) -> IntermediateQueue:
            return StrandedAfter(self.key, connection=self.connection)

    return KayleQueue


def worker_factory(settings: Settings, *, simple: bool) -> Callable[..., BaseWorker]:
    """Builds workers (``factory(queues, connection=...)``) with the maintenance timing from ``settings``."""
    timing = Timing.for_seconds(settings.abandoned_job_seconds)
    # An idle worker blocks on the queue for worker_ttl - 15 s before it can run maintenance again.
    common: dict[str, Any] = {
        "job_monitoring_interval": timing.monitoring,
        "maintenance_interval": timing.maintenance,
        "worker_ttl": timing.maintenance + 15,
        "job_class": KayleJob,  # attempts and handler progress travel in the job's own hash
        "queue_class": queue_class(timing.grace),
        "serializer": SERIALIZER,
    }
    if simple:
        return functools.partial(KayleSimpleWorker, **common)
    return functools.partial(KayleWorker, heartbeat_grace=timing.grace, **common)


def work_burst(settings: Settings, connection: Redis) -> bool:
    """Run one in-process burst worker (``SimpleWorker``) over the queue; used by tests and tools."""
    worker = worker_factory(settings, simple=True)([settings.queue], connection=connection)
    return bool(worker.work(burst=True, with_scheduler=True, logging_level=settings.log_level))


def _connect(settings: Settings) -> Redis:
    connection = sync_redis(settings)
    try:
        connection.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"KAYLE_REDIS_URL: cannot reach Redis at {display_url(settings.redis_url)} ({type(exc).__name__}); "
            "start it or point KAYLE_REDIS_URL at one that answers"
        ) from None
    return connection


def _log_start(settings: Settings, registry: Registry, *, processes: int, simple: bool, burst: bool) -> None:
    log(
        logger,
        logging.INFO,
        "worker starting",
        queue=settings.queue,
        processes=processes,
        kind="simple" if simple else "forking",
        burst=burst,
        abandoned_job_seconds=settings.abandoned_job_seconds,
    )
    for event_type, names in registry.names_by_type().items():
        log(logger, logging.INFO, "handlers", event_type=event_type, handlers=",".join(names))
    for warning, fix in unknown_type_warnings(registry):
        log(logger, logging.WARNING, warning, fix=fix)


def live_workers_on(host: str, connection: Redis, queue: str) -> list[str]:
    """The workers of ``queue`` on ``host`` whose registration in Redis is still alive: RQ lets a worker's key
    expire when its heartbeats stop, so a hung or killed worker drops out of this list."""
    members = connection.smembers(WORKERS_BY_QUEUE_KEY % queue)
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in members)
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "hostname")
        hosts = pipe.execute()
    return [key.rsplit(":", 1)[-1] for key, found in zip(keys, hosts, strict=True) if found and found.decode() == host]
