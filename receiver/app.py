"""The receiver: a Starlette app whose one POST route reads top to bottom.

read the body (capped) → verify the signature → parse the JWE header → decrypt with the
keyring (in a small thread pool) → read the envelope → intake (atomic) → answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import error_reports, jwe, metrics, signature, tracing
from receiver.admin import healthz
from receiver.body import read_body
from receiver.connections import async_redis, sync_redis
from receiver.envelope import read_envelope
from receiver.errors import DeliveryRejected, RejectionCode, Unavailable, type_name
from receiver.intake import Intake, Outcome
from receiver.jobs import JobArgs
from receiver.logs import log
from receiver.persistence import FIX, WARNING, eviction_finding, read_eviction_policy, read_persistence
from receiver.seal import Sealer
from receiver.settings import Config, Settings

logger = logging.getLogger("kayle.receiver")

Clock = Callable[[], float]
_MAX_LOGGED_HEADER = 200


def create_app(config: Config, clock: Clock = time.time) -> Starlette:
    settings = config.settings
    redis = async_redis(settings)
    intake = Intake(redis, settings)
    sealer = Sealer(config.keyring)
    threads = settings.decrypt_threads
    decrypting = ThreadPoolExecutor(threads, thread_name_prefix="kayle-decrypt") if threads else None

    async def unwrap_key(parsed: jwe.Jwe) -> bytes:
        if decrypting is None:
            return jwe.unwrap_key(parsed, config.keyring)
        return await asyncio.get_running_loop().run_in_executor(decrypting, jwe.unwrap_key, parsed, config.keyring)

    async def deliver(request: Request, span: tracing.Span) -> Response:
        started = time.perf_counter()
        facts: dict[str, str | None] = {
            "delivery_id": _header(request, "x-kayle-delivery-id"),
            "event_id": None,
            "type": None,
            "kid": None,
        }
        try:
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
            signature.verify(
                request.headers.get(signature.HEADER), body, config.secrets, clock(), settings.tolerance_seconds
            )
            parsed = jwe.parse(body)
            facts["kid"] = parsed.kid
            cek = await unwrap_key(parsed)
            envelope = read_envelope(jwe.open_content(parsed, cek))
            facts.update(event_id=envelope.event_id, type=envelope.type)
            job = JobArgs(
                jwe=body.decode("ascii"),  # exactly as received: ASCII, checked by jwe.parse
                event_id=envelope.event_id,
                event_type=envelope.type,
                kid=parsed.kid,
                delivery_id=facts["delivery_id"],
                received_at=clock(),
                seal=sealer.seal(cek, parsed.kid, envelope.event_id, parsed.protected),
                traceparent=tracing.traceparent(),  # the worker's span of this event is a child of this one
            )
            outcome = await intake.store(job)
        except DeliveryRejected as rejection:
            _log_request(span, rejection.code, rejection.status, facts, started)
            if isinstance(rejection, Unavailable):
                error_reports.message(error_reports.UNAVAILABLE, cause=_cause_type(rejection), **_tags(facts))
            return JSONResponse(rejection.body(), status_code=rejection.status)
        except Exception as unexpected:  # a bug: answered 500 by Starlette, reported without its message
            error_reports.exception(unexpected, **_tags(facts))
            raise
        _log_request(span, outcome, 200, facts, started)
        return JSONResponse({"status": outcome, "event_id": envelope.event_id})

    async def receive(request: Request) -> Response:
        with tracing.span("kayle.delivery", kind="server") as span:
            return await deliver(request, span)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log(logger, logging.INFO, "receiver ready", path=settings.path, kids=",".join(config.keyring))
        for warning, fix in config.keyring.warnings:
            log(logger, logging.WARNING, warning, fix=fix)
        await asyncio.to_thread(_warn_when_unpersisted, settings)
        yield
        await redis.aclose()
        if decrypting is not None:
            decrypting.shutdown()

    routes = [Route(settings.path, receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False  # exactly one webhook path: anything else is 404, never a redirect
    return app


def _warn_when_unpersisted(settings: Settings) -> None:
    """Log what would lose acknowledged events: persistence off, or an eviction policy other than noeviction."""
    client = sync_redis(settings, socket_connect_timeout=2, socket_timeout=5)
    try:
        if read_persistence(client).off:
            log(logger, logging.WARNING, WARNING, fix=FIX)
        finding = eviction_finding(read_eviction_policy(client))
        if finding is not None:
            log(logger, logging.ERROR if finding.loses else logging.WARNING, finding.text, fix=finding.fix)
    except (RedisError, OSError):
        log(logger, logging.WARNING, "Redis is unreachable at start-up; deliveries are answered 503 until it is back")
    finally:
        client.close()


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value[:_MAX_LOGGED_HEADER] if value is not None else None


def _tags(facts: dict[str, str | None]) -> dict[str, str | None]:
    """The facts as error report tags, named as the workers' are."""
    return {"event_type" if name == "type" else name: value for name, value in facts.items()}


def _cause_type(rejection: DeliveryRejected) -> str | None:
    return type_name(rejection.__cause__) if rejection.__cause__ is not None else None


def _log_request(
    span: tracing.Span, outcome: Outcome | RejectionCode, status: int, facts: dict[str, str | None], started: float
) -> None:
    span.set(outcome=outcome, status=status, **facts)
    if status >= 500:
        span.fail(outcome)
    seconds = time.perf_counter() - started
    metrics.observe(outcome, seconds)
    duration_ms = round(seconds * 1000, 2)
    if outcome == "unknown_kid":
        log(
            logger,
            logging.ERROR,
            "delivery encrypted to a kid with no private key in KAYLE_KEY_DIR: add that key, "
            "Kayle retries this delivery for about 32 hours",
            outcome=outcome,
            status=status,
            **facts,
            duration_ms=duration_ms,
        )
        return
    level = logging.WARNING if status >= 500 else logging.INFO
    log(logger, level, "delivery", outcome=outcome, status=status, **facts, duration_ms=duration_ms)

