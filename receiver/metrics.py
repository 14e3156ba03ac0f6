"""Prometheus ``/metrics``: the receiver's own counters, plus what Redis knows (queues, failures, and the
worker processes' handler figures, :mod:`receiver.stats`), read at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from redis.asyncio import Redis

from receiver import stats
from receiver.errors import RejectionCode
from receiver.intake import Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ClosedReason = Literal["header_timeout", "headers_too_large", "evicted_at_cap", "refused_at_cap"]

DELIVERIES = Counter("kayle_deliveries", "Deliveries answered, by outcome code", ["outcome"])
DUPLICATES = Counter("kayle_duplicates", "Deliveries of events already accepted (answered 200 duplicate)")
DURATION = Histogram(
    "kayle_request_duration_seconds",
    "Time to answer a delivery, from first byte read to answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0),
)

CONNECTIONS_CLOSED = Counter(
    "kayle_connections_closed", "Connections the receiver closed before a request was read, by reason", ["reason"]
)


def observe(outcome: Outcome | RejectionCode, seconds: float) -> None:
    DELIVERIES.labels(outcome).inc()
    if outcome == "duplicate":
        DUPLICATES.inc()
    DURATION.observe(seconds)


def connection_closed(reason: ClosedReason) -> None:
    CONNECTIONS_CLOSED.labels(reason).inc()


class _Snapshot(Collector):
    """Metric families computed beforehand from Redis, handed to prometheus-client for rendering."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def _redis_families(redis: Redis, queue: str) -> list[Metric]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(f"rq:queue:{queue}")
        pipe.zcard(f"rq:scheduled:{queue}")
        pipe.zcard(f"rq:failed:{queue}")
        pipe.hgetall(stats.STATS_KEY)
        depth, scheduled, failed, raw = await pipe.execute()
    families: list[Metric] = [
        GaugeMetricFamily("kayle_queue_depth", "Events waiting in the queue", value=depth),
        GaugeMetricFamily("kayle_scheduled_retries", "Events waiting for a retry", value=scheduled),
        GaugeMetricFamily("kayle_failed_events", "Events in the failed registry", value=failed),
    ]
    figures = stats.parse(raw)
    runs = CounterMetricFamily(
        "kayle_handler_runs", "Handler runs, by handler and outcome", labels=["handler", "outcome"]
    )
    durations = HistogramMetricFamily(
        "kayle_handler_duration_seconds", "Handler run time, by handler and outcome", labels=["handler", "outcome"]
    )
    for (handler, outcome), entry in sorted(figures.handlers.items()):
        runs.add_metric([handler, outcome], entry.runs)
        durations.add_metric([handler, outcome], entry.cumulative(), entry.seconds)
    unhandled = CounterMetricFamily("kayle_unhandled_events", "Events no handler was registered for", labels=["type"])
    for event_type, count in sorted(figures.unhandled.items()):
        unhandled.add_metric([event_type], count)
    return [*families, runs, durations, unhandled]


def _process_registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def render(redis: Redis, queue: str) -> bytes:
    """The exposition text; raises Redis errors (the caller answers 503)."""
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(await _redis_families(redis, queue)))
    return generate_latest(_process_registry()) + generate_latest(snapshot)
