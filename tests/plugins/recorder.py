"""Test handlers that record every call in a JSON-lines file (``KAYLE_TEST_RECORD``).

Test-only: the file holds payloads (claims included) so tests can assert on the
models; it is never in Redis or in logs. Behaviour switches, read at call time:

- ``KAYLE_TEST_FLAKY``: ``N`` fails the first N attempts of every event, ``N/M``
  only of events whose crc32(event id) % M == 0 (handler ``flaky``);
- ``KAYLE_TEST_BROKEN``: a file path; ``broken`` fails while it exists;
- ``KAYLE_TEST_HANG``: ``hang`` records ``started`` then sleeps on attempt 1.

The exceptions quote claim values on purpose: they must never reach Redis or logs.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

from workers import BaseEvent, Context, SessionSucceeded, on, on_any


def _record(handler: str, event: BaseEvent, ctx: Context, outcome: str, payload: bool = False) -> None:
    path = os.environ.get("KAYLE_TEST_RECORD")
    if not path:
        return
    line: dict[str, Any] = {
        "handler": handler,
        "event_id": ctx.event_id,
        "type": ctx.event_type,
        "model": type(event).__name__,
        "attempt": ctx.attempt,
        "outcome": outcome,
        "pid": os.getpid(),
        "delivery_id": ctx.delivery_id,
        "kid": ctx.kid,
    }
    if payload:
        line["payload"] = event.model_dump(mode="json", exclude_unset=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def _claims_text(event: BaseEvent) -> str:
    return json.dumps(event.model_dump(mode="json").get("data", {}).get("claims", {}), ensure_ascii=False)


@on("verification.session.succeeded")
def succeeded(event: SessionSucceeded, ctx: Context) -> None:
    assert isinstance(event, SessionSucceeded)
    _record("succeeded", event, ctx, "ok", payload=True)


@on("verification.session.failed", "verification.session.expired", "verification.session.cancelled")
def terminal(event: BaseEvent, ctx: Context) -> None:
    _record("terminal", event, ctx, "ok", payload=True)


@on_any
def audit(event: BaseEvent, ctx: Context) -> None:
    _record("audit", event, ctx, "ok", payload=True)


@on_any
def flaky(event: BaseEvent, ctx: Context) -> None:
    setting = os.environ.get("KAYLE_TEST_FLAKY", "")
    if setting:
        times, _, modulo = setting.partition("/")
        chosen = not modulo or zlib.crc32(ctx.event_id.encode()) % int(modulo) == 0
        if chosen and ctx.attempt <= int(times):
            _record("flaky", event, ctx, "error")
            raise RuntimeError(f"flaky handler refuses {_claims_text(event)}")
    _record("flaky", event, ctx, "ok")


@on_any
def broken(event: BaseEvent, ctx: Context) -> None:
    flag = os.environ.get("KAYLE_TEST_BROKEN")
    if flag and Path(flag).exists():
        _record("broken", event, ctx, "error")
        try:
            raise KeyError(_claims_text(event))
        except KeyError as inner:
            raise ValueError(f"cannot provision {_claims_text(event)}") from inner
    _record("broken", event, ctx, "ok")


@on_any
def hang(event: BaseEvent, ctx: Context) -> None:
    if os.environ.get("KAYLE_TEST_HANG") and ctx.attempt == 1:
        _record("hang", event, ctx, "started")
        time.sleep(120)
    _record("hang", event, ctx, "ok")
