"""Tracing, optional: OpenTelemetry spans when the standard ``OTEL_*`` variables ask for traces and the
``[otel]`` extra is installed (README: Tracing and error reporting).

Otherwise every function here is a no-op and nothing from opentelemetry is imported. Spans carry ids,
types, kids, outcome codes, statuses and attempts: never a claim, a body or an exception message.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol

from receiver.errors import type_name
from receiver.logs import log

logger = logging.getLogger("kayle.tracing")

Attribute = str | int | float | bool
Kind = Literal["server", "consumer", "internal"]
#: Every attribute we set is ``kayle.<name>``.
PREFIX = "kayle."
NO_SDK = "tracing is off: OTEL_* variables ask for traces but the OpenTelemetry SDK is not installed"
NO_SDK_FIX = "pip install 'kayle-webhooks[otel]', or unset OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_ENDPOINT"
#: The job argument (and W3C header) that carries the receiver's span to the worker.
TRACEPARENT = "traceparent"


class Span(Protocol):
    def set(self, **attributes: Attribute | None) -> None:
        """Set ``kayle.<name>`` attributes; ``None`` values are left out."""

    def fail(self, error_type: str) -> None:
        """Mark the span failed with an exception's type name or an outcome code (never a message)."""


class Backend(Protocol):
    def span(
        self, name: str, kind: Kind, parent: str | None, attributes: dict[str, Attribute]
    ) -> AbstractContextManager[Span]: ...

    def traceparent(self) -> str | None: ...

    def flush(self, seconds: float) -> None: ...


class _NoSpan:
    def set(self, **attributes: Attribute | None) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass


_NO_SPAN = contextlib.nullcontext(_NoSpan())
_backend: Backend | None = None


def exporters_requested(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the standard variables ask for; none means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names:  # the spec's default exporter is otlp, but only an endpoint says someone listens
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [name for name in (part.strip().lower() for part in names.split(",")) if name and name != "none"]


def sdk_installed() -> bool:
    """Whether the ``[otel]`` extra's SDK is there (its parent packages are imported to find out)."""
    return installed("opentelemetry.sdk.trace")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def setup(service: str) -> bool:
    """Turn tracing on for this process if the variables ask for it (``service`` is the default
    ``service.name``); without the SDK, log one line and stay off. ``True`` when on."""
    global _backend
    names = exporters_requested(os.environ)
    if _backend is not None or not names:
        return _backend is not None
    try:
        from receiver.tracing_otel import OtelBackend
    except ImportError as missing:
        log(logger, logging.WARNING, NO_SDK, fix=NO_SDK_FIX, missing=missing.name)
        return False
    _backend = OtelBackend.from_environment(service, names)
    return _backend is not None


def span(
    name: str, kind: Kind = "internal", parent: str | None = None, **attributes: Attribute | None
) -> AbstractContextManager[Span]:
    """A span around the block, current inside it: a child of ``parent`` (a ``traceparent`` string) if
    given, else of the current span. An exception leaving the block marks it failed with its type only."""
    if _backend is None:
        return _NO_SPAN
    return _backend.span(name, kind, parent, _prefixed(attributes))


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` string, to hand to another process."""
    return _backend.traceparent() if _backend is not None else None


def flush(seconds: float) -> None:
    """Export this process's finished spans now, waiting at most ``seconds`` (a work horse, before it exits)."""
    if _backend is not None:
        _backend.flush(seconds)


def _prefixed(attributes: Mapping[str, Attribute | None]) -> dict[str, Attribute]:
    return {PREFIX + key: value for key, value in attributes.items() if value is not None}


@contextlib.contextmanager
def failing_on_exception(span: Span) -> Iterator[Span]:
    """Mark ``span`` failed with the type of an exception leaving the block (backends wrap their spans in it)."""
    try:
        yield span
    except BaseException as exc:
        span.fail(type_name(exc))
        raise
