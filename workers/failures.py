"""``kayle-webhooks failed list|requeue`` and ``kayle-webhooks forget``: the operator's side of failures.

Everything shown comes from RQ's failed registry on ``KAYLE_QUEUE`` and the
job itself (handler names, exception types, attempt count): ids and names
only, never a claim. Requeueing runs only the handlers that have not completed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from receiver.jobs import event_id_of, job_id, marker_key
from receiver.settings import read_settings
from workers.dispatch import describe_failure
from workers.jobclass import KayleJob

PROG = "kayle-webhooks"
IN_FLIGHT = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@dataclass(frozen=True)
class FailedEvent:
    event_id: str
    event_type: str
    handlers: list[str]
    errors: list[str]
    failed_at: datetime | None
    attempts: int


def failed_events(redis: Redis, queue: str) -> list[FailedEvent]:
    """The events waiting in the failed registry, oldest first."""
    registry = FailedJobRegistry(queue, connection=redis)
    found = []
    for id_ in registry.get_job_ids():
        try:
            job = KayleJob.fetch(id_, connection=redis)
        except NoSuchJobError:
            continue
        handlers, errors = describe_failure(job.meta)
        found.append(
            FailedEvent(
                event_id=event_id_of(job.id),
                event_type=(job.description or "?").split(" ")[0],
                handlers=handlers,
                errors=errors or [_error_of(job)],
                failed_at=job.ended_at or _failed_at(registry, job),
                attempts=job.attempts if isinstance(job, KayleJob) else 0,
            )
        )
    return found


def _failed_at(registry: FailedJobRegistry, job: Job) -> datetime | None:
    try:
        expires: datetime = registry.get_expiration_time(job)
    except TypeError:
        return None
    return expires - timedelta(seconds=job.failure_ttl or 0)


def _error_of(job: Job) -> str:
    """The exception type when no handler failed (the event could not be read, or its worker died)."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    if "AbandonedJobError" in text:
        return "AbandonedJobError (its worker died)"
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    return last.split(":", 1)[0].strip() or "unknown"


def list_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    try:
        events = failed_events(Redis.from_url(settings.redis_url), settings.queue)
    except (RedisError, OSError) as exc:
        return _unreachable(exc)
    if not events:
        print(f"no failed events on queue {settings.queue}")
        return 0
    rows = [["EVENT ID", "TYPE", "FAILED AT (UTC)", "ATTEMPTS", "FAILING HANDLERS", "ERROR"]]
    for event in events:
        when = event.failed_at.strftime("%Y-%m-%d %H:%M:%S") if event.failed_at else "?"
        handlers = ", ".join(event.handlers) or "-"
        rows.append([event.event_id, event.event_type, when, str(event.attempts), handlers, ", ".join(event.errors)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))
    print(f"{len(events)} failed event(s); run '{PROG} failed requeue EVENT_ID' once the handler is fixed")
    return 0


def requeue_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    if bool(args.event_ids) == bool(args.all):
        print(f"{PROG}: give EVENT_ID... or --all", file=sys.stderr)
        return 2
    redis = Redis.from_url(settings.redis_url)
    registry = FailedJobRegistry(settings.queue, connection=redis)
    status = 0
    try:
        ids = [event_id_of(i) for i in registry.get_job_ids()] if args.all else args.event_ids
        for event_id in ids:
            try:
                registry.requeue(job_id(event_id))
            except (InvalidJobOperation, NoSuchJobError):
                print(f"{event_id}: not in the failed registry", file=sys.stderr)
                status = 1
                continue
            print(f"requeued {event_id}")
    except (RedisError, OSError) as exc:
        return _unreachable(exc)
    return status


def forget_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    redis = Redis.from_url(settings.redis_url)
    status = 0
    try:
        for event_id in args.event_ids:
            if not forget(redis, event_id):
                print(f"{event_id}: still queued or running; not forgotten", file=sys.stderr)
                status = 1
                continue
            print(f"forgot {event_id}: a replay from Kayle will be accepted and handled again")
    except (RedisError, OSError) as exc:
        return _unreachable(exc)
    return status


def forget(redis: Redis, event_id: str) -> bool:
    """Drop the marker and a finished or failed job (its handler progress with it); ``False`` if the job is in
    flight."""
    try:
        job: Job | None = KayleJob.fetch(job_id(event_id), connection=redis)  # its delete() handles RQ 3.0.0
    except NoSuchJobError:
        job = None
    if job is not None:
        if job.get_status() in IN_FLIGHT:
            return False
        job.delete()
    redis.delete(marker_key(event_id))
    return True


def _unreachable(exc: BaseException) -> int:
    print(f"{PROG}: cannot reach Redis at KAYLE_REDIS_URL ({type(exc).__name__})", file=sys.stderr)
    return 1
