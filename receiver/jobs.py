"""The job contract between the receiver and the workers.

Both sides import this module; the receiver never imports ``workers``. A job
calls :data:`DISPATCH_FUNCTION` with the keyword arguments of :class:`Delivery`:
the JWE exactly as received (never the plaintext) and the routing facts read at
the door. Redis key names shared by both sides live here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.utils import now

from receiver.settings import Settings

#: Dotted path of the function every job runs (implemented in ``workers.dispatch``).
DISPATCH_FUNCTION = "workers.dispatch.handle_delivery"

MARKER_PREFIX = "kayle:event:"
PROGRESS_PREFIX = "kayle:done:"
JOB_PREFIX = "kayle-"


@dataclass(frozen=True)
class Delivery:
    """The arguments of one job: what the worker needs to decrypt and route the event."""

    jwe: str
    event_id: str
    event_type: str
    kid: str
    delivery_id: str | None
    received_at: float

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def marker_key(event_id: str) -> str:
    """The dedup marker: present while the event counts as accepted."""
    return MARKER_PREFIX + event_id


def progress_key(event_id: str) -> str:
    """The set of handler names that completed for the event (kept while the event is in flight)."""
    return PROGRESS_PREFIX + event_id


def job_id(event_id: str) -> str:
    return JOB_PREFIX + event_id


def event_id_of(job_id_: str) -> str:
    return job_id_.removeprefix(JOB_PREFIX)


def build_job(delivery: Delivery, settings: Settings, connection: Redis) -> Job:
    """The RQ job for ``delivery``, ready to be written (``connection`` is not used to build it)."""
    intervals = settings.retry_schedule()
    job = Job.create(
        DISPATCH_FUNCTION,
        kwargs=delivery.kwargs(),
        connection=connection,
        id=job_id(delivery.event_id),
        description=f"{delivery.event_type} {delivery.event_id}",
        origin=settings.queue,
        result_ttl=0,
        failure_ttl=settings.failure_ttl_seconds,
        timeout=settings.job_timeout_seconds,
        retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
    )
    job.enqueued_at = now()
    job._status = JobStatus.QUEUED
    return job
