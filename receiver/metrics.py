"""Prometheus ``/metrics``: the receiver's own counters, plus what Redis knows (queues, failures, and the
worker processes' handler figures, :mod:`receiver.stats`), read at scrape time."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.queue import Queue
from rq.utils import str_to_date
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from receiver import stats
from receiver.errors import RejectionCode
from receiver.intake import Outcome
from receiver.logs import log

logger = logging.getLogger("kayle.receiver")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape gives up on Redis after this long: Prometheus' own scrape timeout is 10 s by default.
REDIS_TIMEOUT_SECONDS = 2.0
ClosedReason = Literal["header_timeout", "headers_too_large", "evicted_at_cap", "refused_at_cap"]

# Every outcome a delivery can have, so each series exists (at 0) before its first delivery:
# rate() and increase() then see the first one too.
OUTCOMES: tuple[str, ...] = (*get_args(Outcome), *get_args(RejectionCode))

DELIVERIES = Counter(
    "kayle_deliveries",
    "Deliveries answered, by outcome: accepted, duplicate or the error code (deliveries)",
    ["outcome"],
)
DUPLICATES = Counter("kayle_duplicates", "Deliveries of events already accepted, answered 200 duplicate (deliveries)")
DURATION = Histogram(
    "kayle_request_duration_seconds",
    "Time to answer a delivery, from first byte read to answer (seconds)",
    unit="seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0),
)
for _outcome in OUTCOMES:
    DELIVERIES.labels(_outcome)

CONNECTIONS_CLOSED = Counter(
    "kayle_connections_closed",
    "Connections the receiver closed before a request was read, by reason (connections)",
    ["reason"],
)


def observe(outcome: Outcome | RejectionCode, seconds: float) -> None:
    DELIVERIES.labels(outcome).inc()
    if outcome == "duplicate":
        DUPLICATES.inc()
    DURATION.observe(seconds)


def connection_closed(reason: ClosedReason) -> None:
    CONNECTIONS_CLOSED.labels(reason).inc()


# Live workers of the queue and the enqueue time of the oldest queued job, in one call.
# RQ's set of a queue's workers keeps the key of a worker that died without unregistering until a
# live worker cleans it up, so only members whose worker hash (which expires without heartbeats)
# still exists are counted, as RQ's Worker.all() does. The head of the list is the oldest job
# (RQ pushes on the right, pops on the left); a few ids are tried in case one's hash is gone.
_QUEUE_FACTS = """
local live = 0
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  live = live + redis.call('EXISTS', worker)
end
local enqueued_at = false
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, 9)) do
  enqueued_at = redis.call('HGET', ARGV[1] .. id, 'enqueued_at')
  if enqueued_at then break end
end
return {live, enqueued_at}
"""


class _Snapshot(Collector):
    """Metric families computed beforehand from Redis, handed to prometheus-client for rendering."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _oldest_age(enqueued_at: bytes | None, now: float) -> float:
    if not enqueued_at:
        return 0.0
    try:
        return max(0.0, now - str_to_date(enqueued_at).timestamp())
    except ValueError:
        return 0.0


async def _redis_families(redis: Redis, queue: str) -> list[Metric]:
    queue_key = Queue.redis_queue_namespace_prefix + queue
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(queue_key)
        pipe.zcard(f"rq:scheduled:{queue}")
        pipe.zcard(f"rq:failed:{queue}")
        pipe.eval(_QUEUE_FACTS, 2, WORKERS_BY_QUEUE_KEY % queue, queue_key, Job.redis_job_namespace_prefix)
        pipe.hgetall(stats.STATS_KEY)
        depth, scheduled, failed, (workers, enqueued_at), raw = await pipe.execute()
    families: list[Metric] = [
        GaugeMetricFamily("kayle_queue_depth", "Events waiting in the queue for a worker (events)", value=depth),
        GaugeMetricFamily("kayle_scheduled_retries", "Events waiting for a handler retry (events)", value=scheduled),
        GaugeMetricFamily("kayle_failed_events", "Events in the failed registry (events)", value=failed),
        GaugeMetricFamily(
            "kayle_workers", "RQ workers registered for the queue with a live heartbeat (workers)", value=workers
        ),
        GaugeMetricFamily(
            "kayle_oldest_queued_event_age_seconds",
            "Time the oldest event in the queue has waited since it was enqueued; 0 when the queue is empty (seconds)",
            value=_oldest_age(enqueued_at, time.time()),
            unit="seconds",
        ),
    ]
    figures = stats.parse(raw)
    runs = CounterMetricFamily(
        "kayle_handler_runs",
        "Handler runs by all workers, by handler and outcome (runs)",
        labels=["handler", "outcome"],
    )
    durations = HistogramMetricFamily(
        "kayle_handler_duration_seconds",
        "Handler run time, by handler and outcome (seconds)",
        labels=["handler", "outcome"],
        unit="seconds",
    )
    for (handler, outcome), entry in sorted(figures.handlers.items()):
        runs.add_metric([handler, outcome], entry.runs)
        durations.add_metric([handler, outcome], entry.cumulative(), entry.seconds)
    unhandled = CounterMetricFamily(
        "kayle_unhandled_events", "Events no handler was registered for, by event type (events)", labels=["type"]
    )
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
    """The exposition text. Never fails for Redis: without it, the process's series and ``kayle_redis_up 0``."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            families = await _redis_families(redis, queue)
        up = 1
    except (RedisError, OSError, TimeoutError) as error:
        log(
            logger,
            logging.WARNING,
            "metrics: Redis unreachable, serving the receiver's own series only",
            error=type(error).__name__,
        )
        families, up = [], 0
    families.append(
        GaugeMetricFamily("kayle_redis_up", "Whether this scrape could read Redis: 1 yes, 0 no (boolean)", value=up)
    )
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(families))
    return generate_latest(_process_registry()) + generate_latest(snapshot)
