"""The OpenTelemetry half of :mod:`receiver.tracing`, imported only when tracing is on.

The SDK is set up from the standard variables: exporters by name from ``OTEL_TRACES_EXPORTER`` (entry points
``opentelemetry_traces_exporter``; ``otlp`` is HTTP/protobuf, the spec's default, unless
``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` is ``grpc``), each exporter reading its own ``OTEL_EXPORTER_*``, the
resource ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, the sampler ``OTEL_TRACES_SAMPLER[_ARG]``.

Each process builds its provider and exporters at its first span (:meth:`OtelBackend.tracer`), so a forked
process (an RQ work horse, a pool worker) never uses a connection or thread made before the fork
(docs/design.md: Tracing across forks).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from receiver.logs import log
from receiver.tracing import PREFIX, TRACEPARENT, Attribute, Kind, Span, failing_on_exception

logger = logging.getLogger("kayle.tracing")

_ENTRY_POINTS = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_OTLP_DEFAULT = "http/protobuf"
_KINDS = {"server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER, "internal": SpanKind.INTERNAL}
_PROPAGATOR = TraceContextTextMapPropagator()
#: Longer than any valid ``traceparent`` (55 characters): what a job carries is read from Redis.
_MAX_TRACEPARENT = 128
#: After a flush that did not finish in time, flushes wait for nothing this long: while the collector does not
#: answer, work horses drop their spans rather than each holding its job up.
_QUIET_SECONDS = 60.0


class _OtelSpan:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, **attributes: Attribute | None) -> None:
        self._span.set_attributes({PREFIX + k: v for k, v in attributes.items() if v is not None})

    def fail(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, error_type))


class OtelBackend:
    def __init__(self, resource: Resource, exporters: dict[str, type[SpanExporter]]) -> None:
        self._resource = resource
        self._exporters = exporters
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._quiet_until = mmap.mmap(-1, 8)  # shared with the processes forked from this one, as a float

    @classmethod
    def from_environment(cls, service: str, names: list[str]) -> OtelBackend | None:
        exporters = {}
        for name in names:
            exporter = _exporter_class(name)
            if exporter is None:
                log(logger, logging.WARNING, "tracing: no such span exporter, left out", exporter=name,
                    fix="set OTEL_TRACES_EXPORTER to console or otlp, or install the exporter's package")
                continue
            exporters[name] = exporter
        if not exporters:
            return None
        for exporter in exporters.values():  # import what they import once, here, not in every work horse
            if exporter is not ConsoleSpanExporter:
                exporter().shutdown()
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        log(logger, logging.INFO, "tracing on", exporters=",".join(exporters),
            service=str(resource.attributes.get(SERVICE_NAME)))
        return cls(resource, exporters)

    def tracer(self) -> trace.Tracer:
        """This process's tracer, its provider and exporters built here at the first call."""
        pid = os.getpid()
        if self._pid != pid or self._tracer is None:
            with self._lock:
                if self._pid != pid or self._tracer is None:
                    provider = TracerProvider(resource=self._resource)
                    for exporter in self._exporters.values():
                        provider.add_span_processor(_processor(exporter))
                    trace.set_tracer_provider(provider)  # the handlers' own spans, through the API's global
                    self._provider, self._tracer, self._pid = provider, provider.get_tracer("kayle-webhooks"), pid
        return self._tracer

    @contextlib.contextmanager
    def span(self, name: str, kind: Kind, parent: str | None, attributes: dict[str, Attribute]) -> Iterator[Span]:
        context = None
        if isinstance(parent, str):  # read from Redis: anything invalid extracts to an empty context (a new trace)
            context = _PROPAGATOR.extract({TRACEPARENT: parent[:_MAX_TRACEPARENT]})
        with self.tracer().start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,  # its message may quote claims: only the type is kept (failing_on_exception)
            set_status_on_exception=False,
        ) as current, failing_on_exception(_OtelSpan(current)) as wrapped:
            yield wrapped

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get(TRACEPARENT)

    def flush(self, seconds: float) -> None:
        provider = self._provider if self._pid == os.getpid() else None
        if provider is None or time.monotonic() < struct.unpack("d", self._quiet_until[:8])[0]:
            return
        # force_flush waits for the exporter, whatever timeout it is given: bound the wait ourselves.
        flushing = threading.Thread(target=provider.force_flush, name="kayle-trace-flush", daemon=True)
        flushing.start()
        flushing.join(seconds)
        if flushing.is_alive():
            self._quiet_until[:8] = struct.pack("d", time.monotonic() + _QUIET_SECONDS)


def _exporter_class(name: str) -> type[SpanExporter] | None:
    if name == "console":
        return ConsoleSpanExporter
    if name == "otlp":
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        )
        name = _OTLP_BY_PROTOCOL.get(protocol.strip(), _OTLP_BY_PROTOCOL[_OTLP_DEFAULT])
    for point in entry_points(group=_ENTRY_POINTS, name=name):
        try:
            loaded = point.load()
        except ImportError:
            return None
        return loaded if isinstance(loaded, type) and issubclass(loaded, SpanExporter) else None
    return None


def _processor(exporter: type[SpanExporter]) -> SpanProcessor:
    if exporter is ConsoleSpanExporter:
        # One JSON line per span on stdout, written as the span ends (our logs go to stderr).
        return SimpleSpanProcessor(ConsoleSpanExporter(formatter=_json_line))
    return BatchSpanProcessor(exporter())  # the exporter reads its OTEL_EXPORTER_* variables; batches OTEL_BSP_*


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"
