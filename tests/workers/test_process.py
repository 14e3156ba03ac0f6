"""Real ``kayle-webhooks worker`` processes: plugin failures, a killed worker, and the end-to-end run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from rq.job import Job

from receiver import jwe, signature
from receiver.jobs import job_id
from tests.helpers.plugins import EXAMPLE_MODULE, EXAMPLE_PLUGIN
from tests.helpers.privacy import claim_values, leaks
from tests.helpers.processes import PATIENCE, command, free_port, running, stop_group, wait_for_http, wait_until
from tests.helpers.receiver import post_all
from tests.helpers.sending import PATH, client_limits
from tests.helpers.vectors import OTHER_KID, REPO, Fixture, by_name
from tests.helpers.workers import (
    RECORDER,
    failed_ids,
    ok_counts,
    pending,
    read_records,
    recorder_handlers,
    set_worker_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def test_a_plugin_that_fails_to_import_stops_the_worker_naming_it(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_HANDLERS=f"{RECORDER},tests.plugins.broken_import")
    finished = subprocess.run(
        command("worker", "--burst"), env=dict(os.environ), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert "tests.plugins.broken_import" in lines[0] and "failed to import" in lines[0]


def test_a_worker_warns_at_start_up_about_a_key_others_can_read(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_dir: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    exposed = keys / f"{OTHER_KID}.pem"
    exposed.write_bytes((key_dir / f"{OTHER_KID}.pem").read_bytes())
    exposed.chmod(0o644)
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_KEY_DIR=str(keys))

    finished = subprocess.run(
        command("worker", "--burst", "--simple"), env=dict(os.environ), cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )

    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    [warning] = [line for line in lines if line["level"] == "warning" and str(exposed) in line["message"]]
    assert "mode 0644" in warning["message"] and warning["fix"].startswith(f"chmod 600 {exposed}")


async def test_an_event_whose_worker_is_killed_mid_handler_is_completed_by_another_worker(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_HANG="1", KAYLE_RETRY_INTERVALS="0")
    records_path = Path(values["KAYLE_TEST_RECORD"])
    fixture = by_name(fixtures, "verification.session.succeeded")
    assert await post_all([fixture]) == ["accepted"]

    with (tmp_path / "first.log").open("ab") as log:
        first = subprocess.Popen(
            command("worker"), env=dict(os.environ), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: any(r["outcome"] == "started" for r in read_records(records_path)), "the handler starting")
        horse = next(r["pid"] for r in read_records(records_path) if r["outcome"] == "started")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its scheduler, as when a container dies
        os.kill(horse, signal.SIGKILL)  # and the work horse running the handler
    finally:
        stop_group(first)

    with running(command("worker"), dict(os.environ), tmp_path / "second.log"):
        hang = ("hang", fixture.event_id)
        wait_until(lambda: hang in ok_counts(read_records(records_path)), "the handler completing")
        wait_until(lambda: not pending(redis_client, "kayle"), "the job finishing")

    records = read_records(records_path)
    counts = ok_counts(records)
    for handler in ("succeeded", "audit", "flaky", "broken", "hang"):
        assert counts[(handler, fixture.event_id)] == 1, handler
    assert [r["attempt"] for r in records if r["handler"] == "hang"] == [1, 2]
    assert failed_ids(redis_client, "kayle") == []
    assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0


def make_events(count: int) -> list[dict[str, Any]]:
    """Distinct events of every type, the future one included; claims drawn from a few distinctive values."""
    names = ["Wójcik-Zebrowska", "Okonkwo-Adeyemi", "Halvorsen-Lie", "Beaumont-Aurillac"]
    kinds = [
        ("verification.session.succeeded", lambda i: {
            "claims": {"family_name": names[i % 4], "document_number": f"QX{i % 7}Z9P4W", "given_names": None,
                       "age_over_18": True},
            "selected_field_keys": ["family_name", "document_number", "age_over_18"],
        }),
        ("verification.session.failed", lambda i: {
            "failure_code": "liveness_failed", "nfc_tries_used": 1, "liveness_tries_used": 3}),
        ("verification.session.expired", lambda i: {}),
        ("verification.session.cancelled", lambda i: {
            "outcome": "not_verified", "reason": "cancelled", "nfc_tries_used": 0, "liveness_tries_used": 0}),
        ("verification.session.review_required", lambda i: {"review_reason": "age_borderline", "x": [i]}),
    ]
    events = []
    for i in range(count):
        event_type, data = kinds[i % len(kinds)]
        events.append({
            "data": data(i),
            "metadata": {"contract_version": 1, "event_id": f"evt_e2e{i:05d}", "verification_session_id": f"vs_{i}"},
            "type": event_type,
        })
    return events


async def send(url: str, deliveries: list[tuple[str, bytes]], secret: str) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, number: int, body: bytes) -> str:
        async with limit:
            headers = {
                "Content-Type": "application/jose",
                "X-Kayle-Delivery-Id": f"whd_{number:064d}",
                "X-Kayle-Signature": signature.sign(secret, int(time.time()), body),
            }
            response = await http.post(url, content=body, headers=headers)
            assert response.status_code == 200, response.text
            return str(response.json()["status"])

    async with httpx.AsyncClient(timeout=PATIENCE, limits=client_limits(16)) as http:
        return await asyncio.gather(*(one(http, n, body) for n, (_, body) in enumerate(deliveries)))


async def test_end_to_end_2000_deliveries_with_duplicates_and_first_attempt_failures(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    key_dir: Path,
) -> None:
    values = set_worker_env(
        env, tmp_path, monkeypatch, KAYLE_TEST_FLAKY="1/5", KAYLE_RETRY_INTERVALS="1",
        KAYLE_HANDLERS=f"{RECORDER},{EXAMPLE_MODULE}", KAYLE_EXAMPLE_DB=str(tmp_path / "example.sqlite3"),
    )
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE_PLUGIN))
    records_path = Path(values["KAYLE_TEST_RECORD"])
    private = serialization.load_pem_private_key((key_dir / f"{OTHER_KID}.pem").read_bytes(), password=None)
    public = private.public_key()  # type: ignore[union-attr]
    events = make_events(1600)
    unique = [(e["metadata"]["event_id"], jwe.encrypt(json.dumps(e).encode(), public, OTHER_KID)) for e in events]
    rng = random.Random(7)
    deliveries = unique + [rng.choice(unique) for _ in range(400)]
    rng.shuffle(deliveries)
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"

    with (
        running(command("serve", "--port", str(port)), dict(os.environ), tmp_path / "receiver.log") as receiver,
        running(command("worker", "--simple", "--processes", "2"), dict(os.environ), tmp_path / "worker.log"),
    ):
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        started = time.monotonic()
        outcomes = await send(url, deliveries, env["KAYLE_SIGNING_SECRETS"])
        print(f"sent in {time.monotonic() - started:.1f} s")  # reported with -s
        assert outcomes.count("accepted") == 1600 and outcomes.count("duplicate") == 400

        wanted = {(h, e["metadata"]["event_id"]) for e in events for h in recorder_handlers(e["type"])}
        wait_until(lambda: wanted <= set(ok_counts(read_records(records_path))), "every handler completing")
        print(f"handled in {time.monotonic() - started:.1f} s")
        wait_until(lambda: not pending(redis_client, "kayle"), "the queue draining")
        listing = subprocess.run(
            command("failed", "list"), env=dict(os.environ), cwd=REPO, capture_output=True, text=True, timeout=30
        )

    records = read_records(records_path)
    counts = ok_counts(records)
    assert set(counts) == wanted
    assert set(counts.values()) == {1}  # exactly once per handler and unique event
    retried = {r["event_id"] for r in records if r["outcome"] == "error"}
    assert 200 < len(retried) < 450  # about one event in five failed its first attempt
    assert failed_ids(redis_client, "kayle") == []
    assert "no failed events" in listing.stdout
    assert not list(redis_client.scan_iter("rq:job:*"))  # every job finished, its progress with it
    with sqlite3.connect(values["KAYLE_EXAMPLE_DB"]) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (1600,)
    logs = [(tmp_path / name).read_text(encoding="utf-8") for name in ("receiver.log", "worker.log")]
    claims = {"Wójcik-Zebrowska", "Okonkwo-Adeyemi", "Halvorsen-Lie", "Beaumont-Aurillac", "QX3Z9P4W"}
    claims |= claim_values(fixtures)
    assert leaks(claims, redis_client, texts=logs) == []
    assert '"handler": "tests.plugins.recorder.flaky"' in logs[1]  # the failures were logged, by name


def test_worker_alive_reports_a_live_worker_and_not_a_hung_or_stopped_one(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """The liveness probe of a worker container: 0 while a worker on this host is registered, 1 once it hangs
    (SIGSTOP: no more heartbeats, so RQ lets its registration expire; the test fast-forwards that expiry,
    which RQ sets a minute past the expected heartbeat) or has stopped."""
    set_worker_env(env, tmp_path, monkeypatch)

    def probe() -> int:
        return subprocess.run(
            command("worker-alive"), env=dict(os.environ), cwd=REPO, capture_output=True, timeout=PATIENCE
        ).returncode

    assert probe() == 1
    with running(command("worker"), dict(os.environ), tmp_path / "worker.log") as worker:
        wait_until(lambda: probe() == 0, "the probe seeing the worker")
        worker.send_signal(signal.SIGSTOP)
        try:
            for key in redis_client.smembers("rq:workers:kayle"):
                redis_client.pexpire(key, 1)
            assert probe() == 1
        finally:
            worker.send_signal(signal.SIGCONT)
    with running(command("worker"), dict(os.environ), tmp_path / "second.log") as worker:
        wait_until(lambda: probe() == 0, "the probe seeing a new worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=PATIENCE) == 0
        assert probe() == 1
