"""The job function: decrypt the event again, validate it, run the handlers that have not completed.

A handler's exception message may quote claims, so it never leaves this module: RQ (and so Redis
and RQ's log lines) sees one :class:`HandlerFailed` naming handlers, exception types and frames.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING

from pydantic import ValidationError
from rq.job import get_current_job

from receiver import error_reports, tracing
from receiver import jwe as jwe_format
from receiver.envelope import envelope_of, load_payload
from receiver.errors import JweRejected, PayloadRejected, type_name
from receiver.keyring import Keyring
from receiver.logs import log
from receiver.seal import Sealer
from receiver.settings import Settings, load_config
from receiver.stats import OTHER_TYPE, HandlerOutcome, record_handler_run, record_unhandled
from workers.jobclass import KayleJob
from workers.models import KNOWN_EVENT_TYPES, BaseEvent, Context, model_for
from workers.plugins import load_handlers
from workers.registry import Handler, Registry

if TYPE_CHECKING:
    from redis.client import Pipeline

logger = logging.getLogger("kayle.worker")

_MAX_FRAMES = 12


class HandlerFailed(Exception):
    """One or more handlers raised; the message names them, their exception types and frames, never messages."""


class EventUnreadable(Exception):
    """The queued JWE could not be decrypted or validated; the message names the reason, never the payload."""


@dataclass(frozen=True)
class Runtime:
    """What a worker process runs jobs with."""

    settings: Settings
    keyring: Keyring
    registry: Registry
    sealer: Sealer = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sealer", Sealer(self.keyring))


@dataclass(frozen=True)
class Failure:
    handler: str
    error_type: str
    frames: list[str]


_runtime: Runtime | None = None


def configure(runtime: Runtime) -> None:
    """Set the process's runtime (``kayle-webhooks worker`` does, before any job runs)."""
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    """The configured runtime; loaded from ``KAYLE_*`` once if this process was started some other way."""
    if _runtime is None:
        config = load_config(need_secrets=False)
        configure(Runtime(config.settings, config.keyring, load_handlers(config.settings)))
    assert _runtime is not None
    return _runtime


def handle_delivery(
    jwe: str,
    event_id: str,
    event_type: str,
    kid: str,
    delivery_id: str | None,
    received_at: float,
    seal: str | None = None,
    traceparent: str | None = None,
) -> None:
    """Run one event's unfinished handlers (the job contract of :mod:`receiver.jobs`)."""
    runtime = current_runtime()
    job = get_current_job()
    if not isinstance(job, KayleJob):
        raise TypeError("handle_delivery runs in kayle-webhooks workers only (their job class is KayleJob)")
    with tracing.span(
        "kayle.event", kind="consumer", parent=traceparent, event_id=event_id, type=event_type, kid=kid,
        delivery_id=delivery_id, attempt=job.attempt,
    ) as span:
        event = read_event(jwe, event_id, runtime.keyring, seal, runtime.sealer)
        handlers = runtime.registry.for_type(event.type)
        if not handlers:
            span.set(outcome="unhandled")
            counted_as = event.type if event.type in KNOWN_EVENT_TYPES else OTHER_TYPE  # a bounded set of labels
            job.defer(lambda pipe: record_unhandled(pipe, counted_as))
            log(logger, logging.INFO, "event unhandled", event_id=event_id, type=event.type, attempt=job.attempt)
            return
        context = Context(
            event_id=event_id,
            event_type=event.type,
            delivery_id=delivery_id,
            kid=kid,
            received_at=datetime.fromtimestamp(received_at, UTC),
            attempt=job.attempt,
        )
        pending = [h for h in handlers if h.name not in job.done]
        failures = _run_all(pending, event, context, job)
        span.set(outcome="failed" if failures else "handled")
        if failures:
            _fail(job, context, failures, len(handlers))
    log(
        logger,
        logging.INFO,
        "event handled",
        event_id=event_id,
        type=context.event_type,
        attempt=job.attempt,
        handlers=",".join(h.name for h in handlers),
        ran=",".join(h.name for h in pending),
    )


def read_event(
    jwe: str, event_id: str, keyring: Keyring, seal: str | None = None, sealer: Sealer | None = None
) -> BaseEvent:
    """Decrypt (with the sealed content key when it opens, else with RSA) and validate; raise
    :class:`EventUnreadable` with a reason that quotes nothing of the payload."""
    try:
        parsed = jwe_format.parse(jwe.encode("ascii"))
        cek = sealer.open(seal, parsed.kid, event_id, parsed.protected) if seal and sealer else None
        if cek is None:
            cek = jwe_format.unwrap_key(parsed, keyring)
        payload = load_payload(jwe_format.open_content(parsed, cek))
        envelope = envelope_of(payload)
    except (JweRejected, PayloadRejected) as rejected:
        raise EventUnreadable(f"{rejected.code}: {rejected.message}") from None
    except UnicodeEncodeError:
        raise EventUnreadable("jwe_malformed: the queued JWE is not ASCII") from None
    model = model_for(envelope.type)
    places = ""
    try:
        event = model.model_validate(payload)
    except ValidationError as invalid:  # its text quotes input values: keep only locations and error types
        places = ", ".join(f"{'.'.join(map(str, e['loc']))} ({e['type']})" for e in invalid.errors()[:10])
    if places:  # raised outside the except block, so not even __context__ refers to the ValidationError
        raise EventUnreadable(f"payload_invalid: not a valid {model.__name__}: {places}")
    if event.event_id != event_id:
        raise EventUnreadable("payload_invalid: the payload's event id is not the job's")
    return event


def _run_all(handlers: list[Handler], event: BaseEvent, context: Context, job: KayleJob) -> list[Failure]:
    """Run ``handlers`` in order and return their failures. Each completion is stored in the job's progress
    with its figures before the next handler starts (the last one's with RQ's end-of-run round trip), so a
    retry skips it."""
    failures: list[Failure] = []
    completed: set[str] = set()
    for index, handler in enumerate(handlers):
        last = index == len(handlers) - 1
        # Each handler gets an event of its own; the last one can have the original, which nothing reads after.
        failed = _run_one(handler, event if last else event.model_copy(deep=True), context, job)
        if failed is not None:
            failure, stop = failed
            failures.append(failure)
            if stop:
                break  # the job's time is up or the process is stopping: leave the rest for the retry
            continue
        completed.add(handler.name)
        job.defer(partial(job.record_done, set(completed)))
        if not last:
            job.flush()  # stored before the next handler starts; the last one's waits for RQ's round trip
    return failures


def _run_one(handler: Handler, event: BaseEvent, context: Context, job: KayleJob) -> tuple[Failure, bool] | None:
    """Run one handler in its span; if it raised, its failure and whether the run must stop there."""
    started = time.perf_counter()
    with tracing.span("kayle.handler", handler=handler.name, attempt=context.attempt) as span:
        try:
            handler.func(event, replace(context, handler=handler.name))
        except BaseException as exc:  # every handler error is recorded, sanitized, here
            failure = _failure_of(handler, exc)
            span.set(outcome="error")
            span.fail(failure.error_type)
            job.defer(_run_figures(handler.name, "error", time.perf_counter() - started))
            log(
                logger,
                logging.WARNING,
                "handler failed",
                event_id=context.event_id,
                type=context.event_type,
                handler=handler.name,
                error=failure.error_type,
                attempt=context.attempt,
            )
            error_reports.exception(
                exc, event_id=context.event_id, event_type=context.event_type, handler=handler.name,
                attempt=context.attempt, kid=context.kid,
            )
            return failure, not isinstance(exc, Exception) or _is_timeout(exc)
        span.set(outcome="ok")
        job.defer(_run_figures(handler.name, "ok", time.perf_counter() - started))
    return None


def _run_figures(handler: str, outcome: HandlerOutcome, seconds: float) -> Callable[[Pipeline], object]:
    return lambda pipe: record_handler_run(pipe, handler, outcome, seconds)


def _is_timeout(exc: BaseException) -> bool:
    from rq.timeouts import BaseTimeoutException

    return isinstance(exc, BaseTimeoutException)


def _failure_of(handler: Handler, exc: BaseException) -> Failure:
    """The exception's type (and its causes' types) and frames: never its message or locals."""
    kinds = [type_name(exc)]
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and len(kinds) < 5:
        kinds.append(type_name(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return Failure(handler.name, " <- ".join(kinds), _frames(exc.__traceback__))


def _frames(tb: TracebackType | None) -> list[str]:
    frames = traceback.extract_tb(tb)[1:]  # the first frame is the call in _run_one
    return [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames[-_MAX_FRAMES:]]


def _fail(job: KayleJob, context: Context, failures: list[Failure], total: int) -> None:
    """Record the failing handlers in the job's meta (progress stays in the job), then raise the sanitized error."""
    job.record_failure([f.handler for f in failures], [f.error_type for f in failures])
    lines = [
        f"{len(failures)} of {total} handlers failed for {context.event_type} {context.event_id} "
        f"(attempt {context.attempt}); exception messages are not kept, see the handler's own logs"
    ]
    for failure in failures:
        lines += [f"{failure.handler} raised {failure.error_type}", *failure.frames]
    raise HandlerFailed("\n".join(lines)) from None
