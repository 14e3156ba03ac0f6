"""Two light handlers for load tests: each records (handler, event id) in ``KAYLE_TEST_RECORD`` and does nothing
else, so a load test measures the service rather than its test handlers."""

from __future__ import annotations

import json
import os

from workers import BaseEvent, Context, on_any

HANDLERS = ("first", "second")


def _record(handler: str, ctx: Context) -> None:
    line = {"handler": handler, "event_id": ctx.event_id, "type": ctx.event_type, "outcome": "ok"}
    with open(os.environ["KAYLE_TEST_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


@on_any
def first(event: BaseEvent, ctx: Context) -> None:
    _record("first", ctx)


@on_any
def second(event: BaseEvent, ctx: Context) -> None:
    _record("second", ctx)
