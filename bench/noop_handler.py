"""A handler plugin that does nothing, for the worker benchmarks (``KAYLE_HANDLERS=bench.noop_handler``)."""

from __future__ import annotations

from workers import BaseEvent, Context, on_any


@on_any
def noop(event: BaseEvent, ctx: Context) -> None:
    return None
