"""Error reports: the real sentry-sdk, from real worker and receiver processes, to a Sentry ingest endpoint of
the test's own; what arrives names types, frames and ids, never a claim, an exception message or a body."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from receiver.error_reports import UNAVAILABLE, scrub
from receiver.settings import ConfigError, read_settings
from tests.helpers.privacy import claims_of, leaked_claims, sample_claim_values
from tests.helpers.processes import command, free_port, serving, wait_until
from tests.helpers.receiver import post_all
from tests.helpers.sending import PATH
from tests.helpers.telemetry import http_sink, import_watch, sentry_events, succeeded_delivery
from tests.helpers.vectors import FIXTURE_KID, REPO, Fixture, by_name
from tests.helpers.workers import RECORDER, failed_ids, set_worker_env, worker_env

SECRET_DSN = "https://0123456789abcdef@o1.ingest.example/42"


def test_a_sentry_dsn_is_checked_in_one_line_that_never_quotes_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAYLE_SENTRY_DSN", "0123456789abcdef-not-a-dsn")
    with pytest.raises(ConfigError) as raised:
        read_settings()
    assert str(raised.value).startswith("KAYLE_SENTRY_DSN: ") and "\n" not in str(raised.value)
    assert "0123456789abcdef" not in str(raised.value)
    monkeypatch.setenv("KAYLE_SENTRY_DSN", SECRET_DSN)
    settings = read_settings()
    assert settings.sentry_dsn is not None and settings.sentry_dsn.get_secret_value() == SECRET_DSN
    assert "0123456789abcdef" not in repr(settings)  # a secret: never in a repr or a log line
    monkeypatch.setenv("KAYLE_SENTRY_DSN", " ")
    assert read_settings().sentry_dsn is None  # blank, as in a compose file's template, is unset


def test_scrub_keeps_types_frames_and_tags_and_drops_every_value_that_could_quote_data():
    claim = "Okonkwo-Lindqvist"
    event: dict[str, Any] = {
        "event_id": "0" * 32, "level": "error", "platform": "python", "tags": {"kayle.handler": "h"},
        "message": f"not ours: {claim}", "logentry": {"message": claim}, "extra": {"x": claim},
        "request": {"data": claim}, "user": {"email": claim}, "breadcrumbs": {"values": [{"message": claim}]},
        "threads": {"values": [{"name": claim}]}, "modules": {claim: "1"},
        "contexts": {"runtime": {"name": "CPython"}, "mine": {"claim": claim}},
        "exception": {"values": [{
            "type": "ValueError", "value": f"cannot provision {claim}", "module": None,
            "mechanism": {"type": "generic", "handled": True, "data": {"claim": claim}, "exception_id": 0},
            "stacktrace": {"frames": [{
                "filename": "plugin.py", "abs_path": "/app/plugin.py", "function": "broken", "lineno": 7,
                "module": "plugin", "in_app": True, "vars": {"claims": claim}, "context_line": "    raise",
            }]},
        }]},
    }
    kept = scrub(event, {})  # type: ignore[arg-type]
    assert kept is not None
    assert claim not in json.dumps(kept)
    assert kept["tags"] == {"kayle.handler": "h"} and kept["contexts"] == {"runtime": {"name": "CPython"}}
    assert kept["exception"] == {"values": [{
        "type": "ValueError", "module": None, "mechanism": {"type": "generic", "handled": True, "exception_id": 0},
        "stacktrace": {"frames": [{"filename": "plugin.py", "abs_path": "/app/plugin.py", "function": "broken",
                                   "lineno": 7, "module": "plugin", "in_app": True, "context_line": "    raise"}]},
    }]}
    ours = scrub({"message": UNAVAILABLE, "level": "warning"}, {})  # type: ignore[arg-type]
    assert ours is not None and ours["message"] == UNAVAILABLE


def assert_nothing_of_the_event(raw: bytes, claims: set[str], body: bytes) -> None:
    assert leaked_claims(raw, claims) == []
    assert body not in raw and not [part for part in body.split(b".") if len(part) > 16 and part in raw]


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_handler_failure_is_reported_with_type_frames_and_ids_but_none_of_its_message(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture],
):
    flag = tmp_path / "broken"
    flag.touch()  # the recorder's `broken` raises ValueError from KeyError, both messages quoting the claims
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="")
    fixture = by_name(fixtures, "verification.session.succeeded")
    assert await post_all([fixture]) == ["accepted"]
    with http_sink() as (sentry, received):
        dsn = sentry.replace("http://", "http://public@") + "/1"
        values = {**os.environ, "KAYLE_SENTRY_DSN": dsn}
        worker = subprocess.run(command("worker", "--burst"), env=values, cwd=REPO, capture_output=True, timeout=120)
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        wait_until(lambda: sentry_events(received), "the report arriving", timeout=30)
    assert failed_ids(redis_client, "kayle") == [f"kayle-{fixture.event_id}"]

    [event] = sentry_events(received)
    chain = event["exception"]["values"]
    assert [e["type"] for e in chain] == ["KeyError", "ValueError"]  # the cause first, as Sentry orders them
    assert all("value" not in e for e in chain)
    frames = chain[-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "broken" and frames[-1]["filename"].endswith("recorder.py")
    assert all({"filename", "lineno", "function"} <= set(f) and "vars" not in f for f in frames)
    assert event["tags"] == {
        "kayle.role": "worker", "kayle.event_id": fixture.event_id, "kayle.event_type": fixture.type,
        "kayle.handler": f"{RECORDER}.broken", "kayle.attempt": "1", "kayle.kid": FIXTURE_KID,
    }
    assert not {"request", "extra", "user", "breadcrumbs", "logentry", "message", "modules"} & set(event)
    raw = b"".join(received.bodies("/envelope/"))
    assert_nothing_of_the_event(raw, claims_of(fixture.expected_payload, shortest=4), fixture.body)
    assert b'cannot provision {\\"' not in raw and b'cannot provision {"' not in raw  # the message as raised
    assert b"cannot provision {_claims_text(event)}" in raw  # its source line is there: code, not data


@pytest.mark.slow
def test_a_receiver_reports_a_redis_outage_once_and_never_a_rejected_delivery(
    env: dict[str, str], tmp_path: Path
):
    with http_sink() as (sentry, received):
        dsn = sentry.replace("http://", "http://public@") + "/1"
        values = worker_env(env, tmp_path, KAYLE_SENTRY_DSN=dsn, KAYLE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
        deliveries = [succeeded_delivery(env["KAYLE_SIGNING_SECRETS"]) for _ in range(3)]
        # One receiver process: the message is sent at most once a minute by each.
        with serving(values, tmp_path / "receiver.log", until="/healthz", KAYLE_RECEIVER_PROCESSES="1") as receiver:
            url = f"{receiver.url}{PATH}"
            forged_headers = {**deliveries[0][1].headers, "X-Kayle-Signature": "t=1,v1=00"}
            forged = httpx.post(url, content=deliveries[0][1].body, headers=forged_headers)
            assert forged.status_code == 400
            for _, request in deliveries:
                assert httpx.post(url, content=request.body, headers=request.headers).status_code == 503
        # stopped: the SDK sent what it held on the way out
        events = sentry_events(received)
    assert [e.get("message") for e in events] == [UNAVAILABLE]  # once, however many 503s; nothing for the 400
    [event] = events
    assert event["level"] == "warning" and "exception" not in event
    assert event["tags"]["kayle.role"] == "receiver"
    assert event["tags"]["kayle.cause"] == "redis.exceptions.ConnectionError"
    assert event["tags"]["kayle.event_id"] == deliveries[0][0]["metadata"]["event_id"]
    assert event["tags"]["kayle.event_type"] == "verification.session.succeeded"
    raw = b"".join(received.bodies("/envelope/"))
    for payload, request in deliveries:
        assert_nothing_of_the_event(raw, sample_claim_values() | claims_of(payload), request.body)


@pytest.mark.slow
def test_a_sentry_dsn_without_sentry_sdk_stops_the_process_naming_the_variable(env: dict[str, str], tmp_path: Path):
    values = {**worker_env(env, tmp_path, KAYLE_SENTRY_DSN=SECRET_DSN), **import_watch(tmp_path, refuse=True)}
    for argv in (command("worker", "--burst"), command("serve", "--port", str(free_port()))):
        finished = subprocess.run(argv, env=values, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert finished.returncode == 2, finished.stderr
        assert finished.stderr.strip().splitlines() == [
            "kayle-webhooks: KAYLE_SENTRY_DSN: set, but sentry-sdk is not installed; "
            "pip install 'kayle-webhooks[sentry]' or unset KAYLE_SENTRY_DSN"
        ]
