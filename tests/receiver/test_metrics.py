"""``/metrics`` after a load: the receiver's own figures and the workers' figures read from Redis."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kayle_webhooks.testing import encrypt_payload, sample_payload, sign_request
from receiver.app import create_app
from receiver.settings import load_config
from receiver.stats import STATS_KEY
from tests.helpers.receiver import admin_client
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
