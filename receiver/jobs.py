"""The job contract between the receiver and the workers.

Both sides import this module; the receiver never imports ``workers``. A job
calls :data:`DISPATCH_FUNCTION` with the keyword arguments of :class:`Delivery`:
the JWE exactly as received (never the plaintext) and the routing facts read at
the door. Redis key names shared by both sides live here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.utils import now, utcformat

from receiver.settings import Settings

#: Dotted path of the function every job runs (implemented in ``workers.dispatch``).
DISPATCH_FUNCTION = "workers.dispatch.handle_delivery"

MARKER_PREFIX = "kayle:event:"
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
        # Spelled out: dataclasses.asdict deep-copies, which costs more than the rest of this on every delivery.
        return {
            "jwe": self.jwe,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "kid": self.kid,
            "delivery_id": self.delivery_id,
            "received_at": self.received_at,
        }


def marker_key(event_id: str) -> str:
    """The dedup marker: present while the event counts as accepted."""
    return MARKER_PREFIX + event_id


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


#: The job hash fields that differ from one event to the next; every other field is the same for all jobs.
PER_EVENT_FIELDS = ("created_at", "enqueued_at", "data", "description")


class JobTemplate:
    """The job hash of every event, built once by RQ itself; only :data:`PER_EVENT_FIELDS` are made per delivery.

    Building a whole RQ job per delivery costs more than the rest of the intake; the per-event fields
    are made with RQ's own serializer and time format, and a test checks they equal RQ's.
    """

    def __init__(self, settings: Settings) -> None:
        prototype = build_job(Delivery("", "evt_template", "template", "", None, 0.0), settings, Redis())
        self.constant_fields: dict[str, str | int | bytes] = {
            name: value for name, value in prototype.to_dict().items() if name not in PER_EVENT_FIELDS
        }
        self._dumps = prototype.serializer.dumps

    def per_event_fields(self, delivery: Delivery) -> dict[str, str | bytes]:
        stamp = utcformat(now())
        call = (DISPATCH_FUNCTION, None, (), delivery.kwargs())  # RQ's job data: (function, instance, args, kwargs)
        return {
            "created_at": stamp,
            "enqueued_at": stamp,
            # Not compressed: RQ reads plain data as well (``Job.restore`` falls back when zlib fails), and
            # compressing a base64 JWE saves about a fifth of a short-lived field for ~12 us per delivery.
            "data": self._dumps(call),
            "description": f"{delivery.event_type} {delivery.event_id}",
        }
