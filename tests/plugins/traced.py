"""A handler that makes a span of its own with the OpenTelemetry API, as a partner's handler may: it must
nest under the handler's span. Only workers of the tracing tests load it (``KAYLE_HANDLERS``)."""

from __future__ import annotations

from opentelemetry import trace

from workers import BaseEvent, Context, on_any

OWN_SPAN = "tests.plugins.traced: own work"
_tracer = trace.get_tracer(__name__)


@on_any
def traced(event: BaseEvent, ctx: Context) -> None:
    with _tracer.start_as_current_span(OWN_SPAN) as span:
        span.set_attribute("test.event_id", ctx.event_id)
