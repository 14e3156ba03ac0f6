"""Real processes under bounded load: duplicates, a Redis outage, then real workers.

Every test ends with the same checks: each unique event's handlers completed exactly once
(the recorder plugin counts them), and no claim that was sent is anywhere in Redis or in a
log line (the privacy sweep).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from receiver.jobs import marker_key
from receiver.sender import Delivery, encrypt_payload, sample_payload, sign_delivery
from receiver.settings import Config
from tests.plugins.harness import leaked, redis_blobs
from tests.plugins.recorder import ok_counts, read_records
from tests.reliability.support import PATH, claims_of, own_redis, subprocess_env
from tests.support import FIXTURE_KID, command, free_port, running, wait_for_http

HANDLERS_FOR = {
    "verification.session.succeeded": {"succeeded", "audit", "flaky", "broken", "hang"},
    "other": {"terminal", "audit", "flaky", "broken", "hang"},
}
TYPES = (
    "verification.session.succeeded",
    "verification.session.failed",
    "verification.session.expired",
    "verification.session.cancelled",
)


def handlers_for(event_type: str) -> set[str]:
    return HANDLERS_FOR.get(event_type, HANDLERS_FOR["other"])


def make_events(count: int, config: Config) -> list[tuple[dict[str, Any], Delivery]]:
    public = config.keyring[FIXTURE_KID].public_key()
    events = []
    for index in range(count):
        payload = sample_payload(TYPES[index % len(TYPES)])
        body = encrypt_payload(payload, public, FIXTURE_KID)
        events.append((payload, sign_delivery(body, payload["type"], config.secrets[0])))
    return events


def send_until_2xx(http: httpx.Client, url: str, delivery: Delivery, secret: str, answers: list[int]) -> str:
    """Send like Kayle: every non-2xx (or refused connection) is retried, re-signed, until it is accepted."""
    for _ in range(400):
        try:
            answer = http.post(url, content=delivery.body, headers=delivery.headers)
            answers.append(answer.status_code)
            if answer.is_success:
                return str(answer.json()["status"])
            assert answer.status_code == 503, (answer.status_code, answer.text[:200])
        except httpx.HTTPError:
            answers.append(0)
        time.sleep(0.05)
        delivery = sign_delivery(delivery.body, delivery.event_type, secret, delivery_id=delivery.headers[
            "X-Kayle-Delivery-Id"])
    raise AssertionError("a delivery was never accepted")


def run_workers(env: dict[str, str], log_path: Path, processes: int = 2) -> None:
    argv = command("worker", "--burst", "--simple", "--processes", str(processes))
    with running(argv, env, log_path) as worker:
        assert worker.wait(timeout=150) == 0


def assert_handled_exactly_once(record_path: Path, events: dict[str, str]) -> None:
    counts = ok_counts(read_records(record_path))
    expected = {(handler, event_id) for event_id, kind in events.items() for handler in handlers_for(kind)}
    missing = expected - set(counts)
    twice = {key: n for key, n in counts.items() if n != 1}
    assert not missing, f"{len(missing)} handler runs missing, e.g. {sorted(missing)[:3]}"
    assert not twice, f"handled more than once: {sorted(twice.items())[:3]}"
    assert set(counts) == expected


def assert_nothing_leaked(client: redis.Redis, claims: set[str], *logs: Path) -> None:
    texts = [path.read_text(errors="replace") for path in logs if path.exists()]
    assert leaked(claims, redis_blobs(client), texts) == set()


def worker_env(base: dict[str, str], tmp_path: Path, redis_url: str) -> dict[str, str]:
    return subprocess_env(
        base,
        KAYLE_REDIS_URL=redis_url,
        KAYLE_HANDLERS="tests.plugins.recorder",
        KAYLE_TEST_RECORD=str(tmp_path / "records.jsonl"),
        KAYLE_TOLERANCE_SECONDS="600",
    )


def test_duplicates_under_load_are_accepted_once_and_handled_once(env, config, tmp_path, redis_client, redis_url):
    """5000 deliveries, 30% duplicates (re-signed retries and the same event under another delivery id),
    32 concurrent senders: one job per event, every handler completes exactly once per event."""
    unique = make_events(3500, config)
    public = config.keyring[FIXTURE_KID].public_key()
    secret = config.secrets[0]
    rng = random.Random(5)
    sends = [delivery for _, delivery in unique]
    for payload, delivery in rng.sample(unique, 1500):
        if rng.random() < 0.5:  # the same delivery retried: same body and delivery id, fresh signature
            sends.append(sign_delivery(delivery.body, payload["type"], secret,
                                       delivery_id=delivery.headers["X-Kayle-Delivery-Id"]))
        else:  # the same event delivered to another endpoint: encrypted again, another delivery id
            sends.append(sign_delivery(encrypt_payload(payload, public, FIXTURE_KID), payload["type"], secret))
    rng.shuffle(sends)
    port = free_port()
    serve_env = worker_env(env, tmp_path, redis_url)
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as server:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=server)
        url = f"http://127.0.0.1:{port}{PATH}"
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        with httpx.Client(timeout=15, limits=limits) as http:

            def one(delivery: Delivery) -> None:
                answer = http.post(url, content=delivery.body, headers=delivery.headers)
                assert answer.status_code == 200, answer.text[:200]
                with lock:
                    status = answer.json()["status"]
                    statuses[status] = statuses.get(status, 0) + 1

            with ThreadPoolExecutor(32) as pool:
                list(pool.map(one, sends))
    assert statuses == {"accepted": 3500, "duplicate": 1500}
    run_workers(serve_env, tmp_path / "worker.log")
    assert_handled_exactly_once(tmp_path / "records.jsonl", {p["metadata"]["event_id"]: p["type"] for p, _ in unique})
    claims = set().union(*(claims_of(p) for p, _ in unique))
    assert_nothing_leaked(redis_client, claims, tmp_path / "serve.log", tmp_path / "worker.log")


def test_redis_stopping_mid_load_loses_nothing_acknowledged(env, config, tmp_path):
    """Redis is SIGKILLed a third of the way in and restarted from its append-only file: deliveries are
    answered 503 meanwhile, never 2xx unless stored; Kayle's retries get everything in, handled once."""
    events = make_events(400, config)
    secret = config.secrets[0]
    answers: list[int] = []
    outcomes: dict[str, str] = {}
    with own_redis(tmp_path / "redis") as server:
        port = free_port()
        serve_env = worker_env(env, tmp_path, server.url)
        with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as receiver:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
            url = f"http://127.0.0.1:{port}{PATH}"
            progress = threading.Semaphore(0)

            def one(item: tuple[dict[str, Any], Delivery]) -> None:
                payload, delivery = item
                with httpx.Client(timeout=15) as http:
                    outcomes[payload["metadata"]["event_id"]] = send_until_2xx(http, url, delivery, secret, answers)
                progress.release()

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(one, item) for item in events]
                for _ in range(len(events) // 3):
                    progress.acquire()
                assert server.process is not None
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
                time.sleep(1.5)
                server.start()
                for future in futures:
                    future.result()
        client = redis.Redis.from_url(server.url)
        assert 503 in answers, "the outage was not noticed: the test did not test anything"
        assert sorted(set(answers)) in ([200, 503], [0, 200, 503])
        # Every event answered 2xx is stored: its marker and its job survived the kill.
        for payload, _ in events:
            event_id = payload["metadata"]["event_id"]
            assert client.exists(marker_key(event_id)) == 1
        assert client.llen("rq:queue:kayle") == len(events)
        run_workers(serve_env, tmp_path / "worker.log")
        handled = {p["metadata"]["event_id"]: p["type"] for p, _ in events}
        assert_handled_exactly_once(tmp_path / "records.jsonl", handled)
        claims = set().union(*(claims_of(p) for p, _ in events))
        assert_nothing_leaked(client, claims, tmp_path / "serve.log", tmp_path / "worker.log")
