"""Failed events and dedup markers: the operator's side of ``failed list|requeue`` and ``forget``.

Everything shown comes from RQ's failed registry on ``KAYLE_QUEUE`` and the jobs themselves
(handler names, exception types, attempt counts): ids and names only, never a claim.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus
from rq.registry import FailedJobRegistry

from receiver import dedup
from receiver.jobs import SERIALIZER, event_id_of, job_id
from workers.jobclass import KayleJob

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
    registry = FailedJobRegistry(queue, connection=redis, job_class=KayleJob, serializer=SERIALIZER)
    found = []
    for id_ in registry.get_job_ids():
        try:
            job = KayleJob.load(id_, redis)
        except NoSuchJobError:
            continue
        handlers, errors = job.last_failure()
        found.append(
            FailedEvent(
                event_id=event_id_of(job.id),
                event_type=(job.description or "?").split(" ")[0],
                handlers=handlers,
                errors=errors or [_error_of(job)],
                failed_at=job.ended_at or _failed_at(registry, job),
                attempts=job.attempts,
            )
        )
    return found


def _failed_at(registry: FailedJobRegistry, job: KayleJob) -> datetime | None:
    try:
        expires: datetime = registry.get_expiration_time(job)
    except TypeError:
        return None
    return expires - timedelta(seconds=job.failure_ttl or 0)


def _error_of(job: KayleJob) -> str:
    """The exception type when no handler failed (the event could not be read, or its worker died)."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    if "AbandonedJobError" in text:
        return "AbandonedJobError (its worker died)"
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    return last.split(":", 1)[0].strip() or "unknown"


def requeue(redis: Redis, queue: str, event_ids: list[str] | None) -> tuple[list[str], list[str]]:
    """Put failed events back on the queue (``None``: all of them); ``(requeued, not failed)``."""
    registry = FailedJobRegistry(queue, connection=redis, job_class=KayleJob, serializer=SERIALIZER)
    ids = [event_id_of(i) for i in registry.get_job_ids()] if event_ids is None else event_ids
    requeued, missing = [], []
    for event_id in ids:
        try:
            registry.requeue(job_id(event_id))
        except (InvalidJobOperation, NoSuchJobError):
            missing.append(event_id)
        else:
            requeued.append(event_id)
    return requeued, missing


class Forgotten(enum.Enum):
    FORGOTTEN = "forgotten"
    IN_FLIGHT = "in flight"
    UNKNOWN = "unknown"


def forget(redis: Redis, ttl_seconds: int, event_id: str) -> Forgotten:
    """Drop the marker and a finished or failed job (its handler progress with it), unless the job is in flight."""
    try:
        job: KayleJob | None = KayleJob.load(job_id(event_id), redis)  # its delete() handles RQ 3.0.0
    except NoSuchJobError:
        job = None
    if job is not None and job.get_status() in IN_FLIGHT:
        return Forgotten.IN_FLIGHT
    if job is not None:
        job.delete()
    marker_dropped = dedup.forget(redis, ttl_seconds, event_id)
    return Forgotten.FORGOTTEN if job is not None or marker_dropped else Forgotten.UNKNOWN
