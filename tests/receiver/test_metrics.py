"""``/metrics`` after a load: the receiver's own figures and the workers' figures read from Redis."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.utils import utcformat

from kayle_webhooks.testing import encrypt_payload, sample_payload, sign_request
from receiver import metrics
from receiver.app import create_app
from receiver.settings import load_config
from receiver.stats import STATS_KEY
from tests.helpers.processes import free_port
from tests.helpers.receiver import admin_client, receiver_client
from tests.helpers.vectors import FIXTURE_KID, FIXTURE_TIME
from tests.helpers.workers import configure_in_process, set_worker_env
from workers import dispatch
from workers.process import work_burst
from workers.registry import Registry

pytestmark = pytest.mark.anyio
PATH = "/webhooks/kayle"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_show_deliveries_queue_failures_and_handler_runs(
    env, tmp_path, monkeypatch, redis_client, fixtures
) -> None:
    broken_flag = tmp_path / "broken"
    broken_flag.touch()
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(broken_flag), KAYLE_RETRY_INTERVALS="")
    app = create_app(load_config(), clock=lambda: float(FIXTURE_TIME))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http,
        admin_client() as admin,
    ):
        before = samples((await admin.get("/metrics")).text)
        for fixture in fixtures:
            await http.post(PATH, content=fixture.body, headers=fixture.headers)
        await http.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
        await http.post(PATH, content=b"forged", headers={"X-Kayle-Signature": f"t={FIXTURE_TIME},v1={'0' * 64}"})
        queued = samples((await admin.get("/metrics")).text)
        work_burst(configure_in_process(), redis_client)
        answer = await admin.get("/metrics")
    after = samples(answer.text)
    assert answer.headers["content-type"].startswith("text/plain")

    accepted = value(after, "kayle_deliveries_total", outcome="accepted") - value(
        before, "kayle_deliveries_total", outcome="accepted"
    )
    assert accepted == len(fixtures)
    assert value(after, "kayle_deliveries_total", outcome="duplicate") >= 1
    assert value(after, "kayle_deliveries_total", outcome="signature_mismatch") >= 1
    assert value(after, "kayle_duplicates_total") >= 1
    assert value(after, "kayle_request_duration_seconds_count") >= len(fixtures) + 2

    assert value(queued, "kayle_queue_depth") == len(fixtures)
    assert value(after, "kayle_queue_depth") == 0
    assert value(after, "kayle_failed_events") == len(fixtures)  # `broken` fails every event, no retries left
    assert value(after, "kayle_scheduled_retries") == 0

    handler = "tests.plugins.recorder.{}"
    assert value(after, "kayle_handler_runs_total", handler=handler.format("audit"), outcome="ok") == len(fixtures)
    assert value(after, "kayle_handler_runs_total", handler=handler.format("broken"), outcome="error") == len(fixtures)
    succeeded = sum(f.type == "verification.session.succeeded" for f in fixtures)
    assert value(after, "kayle_handler_runs_total", handler=handler.format("succeeded"), outcome="ok") == succeeded
    count = value(after, "kayle_handler_duration_seconds_count", handler=handler.format("audit"), outcome="ok")
    inf = value(
        after, "kayle_handler_duration_seconds_bucket", handler=handler.format("audit"), outcome="ok", le="+Inf"
    )
    assert count == inf == len(fixtures)
    assert not re.search(r"evt_|vs_", answer.text)  # figures by handler and type, never by event


@contextlib.asynccontextmanager
async def webhook_and_admin() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The webhook app and the admin app of one configuration, in this process."""
    config = load_config()
    async with receiver_client(config) as webhook, admin_client(config) as admin:
        yield webhook, admin


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def test_workers_and_oldest_queued_age_are_read_from_redis(env, redis_client, fixtures) -> None:
    config = load_config()
    queue = config.settings.queue
    async with webhook_and_admin() as (http, admin):
        empty = samples((await admin.get("/metrics")).text)
        assert value(empty, "kayle_workers") == 0
        assert value(empty, "kayle_oldest_queued_event_age_seconds") == 0
        assert value(empty, "kayle_redis_up") == 1

        for fixture in fixtures[:3]:
            assert (await http.post(PATH, content=fixture.body, headers=fixture.headers)).status_code == 200
        # The head of the queue was enqueued 2 minutes ago, the next one 1 minute ago.
        head, second = (job_id.decode() for job_id in redis_client.lrange(f"rq:queue:{queue}", 0, 1))
        for job_id, age in ((head, 120), (second, 60)):
            stamp = utcformat(datetime.now(UTC) - timedelta(seconds=age))
            redis_client.hset(f"rq:job:{job_id}", "enqueued_at", stamp)

        worker = Worker([Queue(queue, connection=redis_client)], connection=redis_client)
        worker.register_birth()
        # A worker that died without unregistering: in RQ's set, but its hash has expired.
        redis_client.sadd(f"rq:workers:{queue}", "rq:worker:killed-long-ago")
        try:
            busy = samples((await admin.get("/metrics")).text)
        finally:
            worker.register_death()
        gone = samples((await admin.get("/metrics")).text)

    assert value(busy, "kayle_queue_depth") == 3
    assert value(busy, "kayle_workers") == 1
    assert 120 <= value(busy, "kayle_oldest_queued_event_age_seconds") < 140
    assert value(gone, "kayle_workers") == 0


async def test_every_metric_family_has_help_and_the_service_s_own_say_their_unit(env, redis_client, fixtures) -> None:
    async with webhook_and_admin() as (http, admin):
        await http.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
        text = (await admin.get("/metrics")).text
    found = families(text)
    assert {
        "kayle_deliveries",
        "kayle_duplicates",
        "kayle_request_duration_seconds",
        "kayle_queue_depth",
        "kayle_scheduled_retries",
        "kayle_failed_events",
        "kayle_workers",
        "kayle_oldest_queued_event_age_seconds",
        "kayle_redis_up",
        "kayle_handler_runs",
        "kayle_handler_duration_seconds",
        "kayle_unhandled_events",
    } <= set(found)
    for name, family in found.items():
        assert family.documentation.strip(), f"{name} has no HELP"
        if name.startswith("kayle_"):
            unit = re.search(r"\(([a-z]+)\)$", family.documentation)
            assert unit, f"{name}: HELP does not end with its unit: {family.documentation!r}"
            assert not name.endswith("_seconds") or unit.group(1) == "seconds", name
    # Counters are exported with _total, durations in seconds (Prometheus naming).
    assert "# TYPE kayle_deliveries_total counter" in text
    assert "# TYPE kayle_handler_runs_total counter" in text
    # Every delivery outcome exists from the start, so rate() sees the first one too.
    zero_outcomes = samples(text)
    for outcome in ("unavailable", "queue_full", "unknown_kid", "signature_mismatch"):
        assert ("kayle_deliveries_total", (("outcome", outcome),)) in zero_outcomes


async def test_metrics_answer_with_the_process_series_while_redis_is_unreachable(env, monkeypatch, fixtures) -> None:
    monkeypatch.setenv("KAYLE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    async with webhook_and_admin() as (http, admin):
        before = samples((await admin.get("/metrics")).text)
        refused = await http.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
        started = time.monotonic()
        answer = await admin.get("/metrics")
        elapsed = time.monotonic() - started
    assert refused.status_code == 503
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert elapsed < metrics.REDIS_TIMEOUT_SECONDS
    after = samples(answer.text)
    assert value(after, "kayle_redis_up") == 0
    unavailable = value(after, "kayle_deliveries_total", outcome="unavailable")
    assert unavailable - value(before, "kayle_deliveries_total", outcome="unavailable") == 1
    assert value(after, "kayle_request_duration_seconds_count") >= 1
    assert "kayle_duplicates" in families(answer.text)
    redis_backed = {"kayle_queue_depth", "kayle_workers", "kayle_handler_runs", "kayle_oldest_queued_event_age_seconds"}
    assert not redis_backed & set(families(answer.text))


@pytest.mark.slow
async def test_a_redis_that_never_answers_does_not_hang_the_scrape(env, monkeypatch) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("KAYLE_REDIS_URL", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        async with admin_client() as admin:
            started = time.monotonic()
            answer = await admin.get("/metrics")
            elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert value(samples(answer.text), "kayle_redis_up") == 0
    assert metrics.REDIS_TIMEOUT_SECONDS <= elapsed < metrics.REDIS_TIMEOUT_SECONDS + 1.5


async def test_50_invented_event_types_through_a_worker_make_one_other_series(env, config, redis_client) -> None:
    secret = env["KAYLE_SIGNING_SECRETS"]
    public = config.keyring[FIXTURE_KID].public_key()
    types = [f"x.invented.{n}" for n in range(50)] + ["verification.session.expired"]
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        for event_type in types:
            request = sign_request(encrypt_payload(sample_payload(event_type), public, FIXTURE_KID), event_type, secret)
            assert (await http.post(PATH, content=request.body, headers=request.headers)).status_code == 200
    # A worker with no handler at all: every event is unhandled, and counted by type.
    dispatch.configure(dispatch.Runtime(config.settings, config.keyring, Registry()))
    work_burst(config.settings, redis_client)
    async with admin_client(config) as admin:
        figures = samples((await admin.get("/metrics")).text)
    series = [(dict(labels), n) for (name, labels), n in figures.items() if name == "kayle_unhandled_events_total"]
    unhandled = {labels["type"]: n for labels, n in series}
    assert unhandled == {"other": 50, "verification.session.expired": 1}
    assert len(redis_client.hkeys(STATS_KEY)) == 2
