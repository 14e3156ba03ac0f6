"""Figures that worker processes leave in one Redis hash for every receiver's ``/metrics`` to report.

Fields are tab-separated: ``runs|seconds\\t<handler>\\t<outcome>``, ``bucket\\t<handler>\\t<outcome>\\t<le>``
(runs at or under ``le``, not cumulative) and ``unhandled\\t<event type>``. Names and types only, from bounded
sets: the registered handlers' names, and Kayle's documented event types, any other counted as ``other``
(:data:`OTHER_TYPE`), so that invented types cannot add fields, and metric series, without end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

STATS_KEY = "kayle:stats:workers"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HandlerOutcome = Literal["ok", "error"]
OTHER_TYPE = "other"


class _Writer(Protocol):
    def hincrby(self, name: str, key: str, amount: int = 1) -> object: ...
    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> object: ...


def record_handler_run(redis: _Writer, handler: str, outcome: HandlerOutcome, seconds: float) -> None:
    """Count one handler run (``redis`` may be a client or a pipeline)."""
    redis.hincrby(STATS_KEY, f"runs\t{handler}\t{outcome}", 1)
    redis.hincrbyfloat(STATS_KEY, f"seconds\t{handler}\t{outcome}", seconds)
    le = next((str(b) for b in DURATION_BUCKETS if seconds <= b), "+Inf")
    redis.hincrby(STATS_KEY, f"bucket\t{handler}\t{outcome}\t{le}", 1)


def record_unhandled(redis: _Writer, event_type: str) -> None:
    """Count an event that no handler was registered for (completed, not failed); ``event_type`` is a known
    type or :data:`OTHER_TYPE`."""
    redis.hincrby(STATS_KEY, f"unhandled\t{event_type}", 1)


@dataclass
class HandlerFigures:
    runs: int = 0
    seconds: float = 0.0
    buckets: dict[str, int] = field(default_factory=dict)

    def cumulative(self) -> list[tuple[str, int]]:
        total = 0
        out = []
        for le in [*map(str, DURATION_BUCKETS), "+Inf"]:
            total += self.buckets.get(le, 0)
            out.append((le, total))
        return out


@dataclass
class WorkerFigures:
    handlers: dict[tuple[str, str], HandlerFigures] = field(default_factory=dict)
    unhandled: dict[str, int] = field(default_factory=dict)


def parse(raw: dict[bytes, bytes]) -> WorkerFigures:
    figures = WorkerFigures()
    for raw_name, raw_value in raw.items():
        parts = raw_name.decode("utf-8", "replace").split("\t")
        value = raw_value.decode()
        if parts[0] == "unhandled" and len(parts) == 2:
            figures.unhandled[parts[1]] = int(value)
            continue
        if len(parts) < 3:
            continue
        entry = figures.handlers.setdefault((parts[1], parts[2]), HandlerFigures())
        if parts[0] == "runs":
            entry.runs = int(value)
        elif parts[0] == "seconds":
            entry.seconds = float(value)
        elif parts[0] == "bucket" and len(parts) == 4:
            entry.buckets[parts[3]] = int(value)
    return figures
