"""Error reports, optional: Sentry when ``KAYLE_SENTRY_DSN`` is set (``[sentry]`` extra; README: Tracing and
error reporting). Without the DSN nothing here imports ``sentry_sdk`` and every report is a no-op.

An event carries exception types and frames (file, line, function, source lines), our tags (ids, types, kid,
handler, attempt, outcome) and our own fixed messages; never an exception's message, local variables, a
request, a body, breadcrumbs or log lines: :func:`scrub` keeps only that, whatever an integration added.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from receiver.settings import ConfigError, Settings
from receiver.tracing import installed

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

#: Our messages: the only message texts an event may carry.
UNAVAILABLE = "deliveries answered 503 unavailable: the event store (Redis) failed"
_MESSAGES = frozenset({UNAVAILABLE})
#: A receiver sends each message at most once per this many seconds (a Redis outage fails every request).
MESSAGE_INTERVAL_SECONDS = 60.0

_EVENT_KEYS = frozenset({
    "event_id", "timestamp", "platform", "level", "server_name", "release", "environment", "dist", "sdk",
    "exception", "tags", "fingerprint", "contexts", "message",
})
_CONTEXTS = frozenset({"runtime", "os", "trace"})
_FRAME_KEYS = frozenset({
    "filename", "abs_path", "module", "function", "lineno", "colno", "in_app", "context_line", "pre_context",
    "post_context",
})

#: How a chained exception relates to the others (ids and the attribute it came from), never data.
_MECHANISM_KEYS = frozenset({"type", "handled", "source", "exception_id", "parent_id", "is_exception_group"})

SENTRY_FIX = "pip install 'kayle-webhooks[sentry]' or unset KAYLE_SENTRY_DSN"

_enabled = False
_last_sent: dict[str, float] = {}


def sdk_installed() -> bool:
    """Whether ``sentry-sdk`` is there (without importing it)."""
    return installed("sentry_sdk")


def setup(settings: Settings, role: Literal["receiver", "worker"]) -> None:
    """Start the Sentry client of this process when ``KAYLE_SENTRY_DSN`` is set (once per process)."""
    global _enabled
    if _enabled or settings.sentry_dsn is None:
        return
    try:
        import sentry_sdk
        from sentry_sdk.integrations.atexit import AtexitIntegration
        from sentry_sdk.integrations.dedupe import DedupeIntegration
    except ImportError:
        raise ConfigError(f"KAYLE_SENTRY_DSN: set, but sentry-sdk is not installed; {SENTRY_FIX}") from None
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        sample_rate=settings.sentry_sample_rate,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        max_breadcrumbs=0,
        before_breadcrumb=lambda crumb, hint: None,
        before_send=scrub,
        # No integration but these two: the default ones add log breadcrumbs, argv and modules, and the
        # auto-enabled ones (rq, starlette, redis, httpx...) attach job arguments, requests and commands.
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[DedupeIntegration(), AtexitIntegration(callback=lambda pending, timeout: None)],
        traces_sample_rate=None,
        auto_session_tracking=False,
        enable_logs=False,
        enable_metrics=False,
    )
    sentry_sdk.get_global_scope().set_tag("kayle.role", role)
    _enabled = True


def exception(exc: BaseException, **tags: str | int | None) -> None:
    """Report ``exc`` (its type and frames) with ``kayle.<name>`` tags."""
    if not _enabled:
        return
    import sentry_sdk

    sentry_sdk.capture_exception(exc, tags=_tags(tags))


def message(text: str, **tags: str | int | None) -> None:
    """Report one of our fixed messages as a warning without a stack, at most once per
    :data:`MESSAGE_INTERVAL_SECONDS` in this process."""
    if not _enabled:
        return
    now = time.monotonic()
    if now - _last_sent.get(text, -MESSAGE_INTERVAL_SECONDS) < MESSAGE_INTERVAL_SECONDS:
        return
    _last_sent[text] = now
    import sentry_sdk

    sentry_sdk.capture_message(text, level="warning", tags=_tags(tags))


def flush(seconds: float) -> None:
    """Send the reports still queued, waiting at most ``seconds`` (a work horse, before it exits)."""
    if _enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=seconds)


def _tags(tags: dict[str, str | int | None]) -> dict[str, str]:
    return {f"kayle.{key}": str(value) for key, value in tags.items() if value is not None}


def scrub(event: Event, hint: Hint) -> Event | None:
    """What an event may carry (module docstring); everything else is dropped."""
    kept: dict[str, Any] = {key: value for key, value in event.items() if key in _EVENT_KEYS}
    if kept.get("message") not in _MESSAGES:
        kept.pop("message", None)
    kept["contexts"] = {k: v for k, v in (event.get("contexts") or {}).items() if k in _CONTEXTS}
    if "exception" in kept:
        kept["exception"] = {"values": [_exception(value) for value in kept["exception"].get("values", [])]}
    return kept  # type: ignore[return-value]


def _exception(value: dict[str, Any]) -> dict[str, Any]:
    """The type and frames of one exception of a chain: its message (``value``) is dropped."""
    kept: dict[str, Any] = {key: value[key] for key in ("type", "module") if key in value}
    mechanism = value.get("mechanism")
    if isinstance(mechanism, dict):
        kept["mechanism"] = {k: v for k, v in mechanism.items() if k in _MECHANISM_KEYS}
    frames = (value.get("stacktrace") or {}).get("frames", [])
    kept["stacktrace"] = {"frames": [{k: v for k, v in f.items() if k in _FRAME_KEYS} for f in frames]}
    return kept
