"""The job contract between the receiver and the workers.

A job calls :data:`DISPATCH_FUNCTION` with the keyword arguments of :class:`JobArgs`:
the JWE exactly as received (never the plaintext) and the routing facts read at the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from receiver.settings import Settings

#: Dotted path of the function every job runs (implemented in ``workers.dispatch``).
DISPATCH_FUNCTION = "workers.dispatch.handle_delivery"
#: How job data and meta are stored: JSON, which cannot execute code when it is read back (RQ's default,
#: pickle, would run whatever a writer to Redis put there).
SERIALIZER = JSONSerializer

JOB_PREFIX = "kayle-"


@dataclass(frozen=True)
class JobArgs:
    """The arguments of one event's job: what the worker needs to decrypt and route it."""

    jwe: str
    event_id: str
    event_type: str
    kid: str
    delivery_id: str | None
    received_at: float
    seal: str | None = None  # the content key, sealed for the worker (receiver.seal)
    traceparent: str | None = None  # the receiver's span, W3C traceparent (receiver.tracing), when tracing is on

    def kwargs(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies, which is slow on the request path.
        return {
            "jwe": self.jwe,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "kid": self.kid,
            "delivery_id": self.delivery_id,
            "received_at": self.received_at,
            "seal": self.seal,
            "traceparent": self.traceparent,
        }


def description(args: JobArgs) -> str:
    """The job's description: ids and type only, as ``rq info`` and dashboards show it."""
    return f"{args.event_type} {args.event_id}"


def job_id(event_id: str) -> str:
    return JOB_PREFIX + event_id


def event_id_of(job_id_: str) -> str:
    return job_id_.removeprefix(JOB_PREFIX)


def build_job(args: JobArgs, settings: Settings, connection: Redis) -> Job:
    """The RQ job for ``args``, ready to be written (``connection`` is not used to build it)."""
    intervals = settings.retry_intervals
    job = Job.create(
        DISPATCH_FUNCTION,
        kwargs=args.kwargs(),
        connection=connection,
        id=job_id(args.event_id),
        description=description(args),
        origin=settings.queue,
        result_ttl=0,
        failure_ttl=settings.failure_ttl_seconds,
        timeout=settings.job_timeout_seconds,
        retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        serializer=SERIALIZER,
    )
    job.enqueued_at = now()
    job._status = JobStatus.QUEUED
    return job


#: The job hash fields that differ from one event to the next; every other field is the same for all jobs.
PER_EVENT_FIELDS = ("created_at", "enqueued_at", "data", "description")


class JobTemplate:
    """The job hash of every event, built once by RQ itself; only :data:`PER_EVENT_FIELDS` are made per event,
    with RQ's own serializer and time format (a test checks they equal what RQ writes)."""

    def __init__(self, settings: Settings) -> None:
        prototype = build_job(JobArgs("", "evt_template", "template", "", None, 0.0), settings, Redis())
        self.constant_fields: dict[str, str | int | bytes] = {
            name: value for name, value in prototype.to_dict().items() if name not in PER_EVENT_FIELDS
        }
        self._dumps = prototype.serializer.dumps

    def per_event_fields(self, args: JobArgs) -> dict[str, str | bytes]:
        stamp = utcformat(now())
        call = (DISPATCH_FUNCTION, None, (), args.kwargs())  # RQ's job data: (function, instance, args, kwargs)
        return {
            "created_at": stamp,
            "enqueued_at": stamp,
            # Not compressed: RQ reads plain data as well (``Job.restore`` falls back when zlib fails).
            "data": self._dumps(call),
            "description": description(args),
        }
