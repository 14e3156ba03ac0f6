"""Real processes under bounded load: duplicates, a Redis outage, then real workers.

Every test ends with the same checks: each unique event's handlers completed exactly once
(the recorder plugin counts them), and no claim that was sent is anywhere in Redis or in a
log line (the privacy sweep).
"""

from __future__ import annotations

import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue

from kayle_webhooks.testing import SignedRequest, encrypt_payload, sign_request
from tests.helpers.privacy import claims_of, leaks
from tests.helpers.processes import PATIENCE, command, free_port, running, wait_for_http, wait_until
from tests.helpers.redis import marked, own_redis
from tests.helpers.sending import PATH, Event, make_events, resigned, send_all, send_until_2xx, sender
from tests.helpers.vectors import FIXTURE_KID
from tests.helpers.workers import TALLY, assert_handled_exactly_once, tally_handlers, worker_env

pytestmark = pytest.mark.slow


def run_workers(env: dict[str, str], log_path: Path, processes: int = 2) -> None:
    argv = command("worker", "--burst", "--simple", "--processes", str(processes))
    with running(argv, env, log_path) as worker:
        assert worker.wait(timeout=600) == 0


def assert_nothing_leaked(client: redis.Redis, events: list[Event], *logs: Path) -> None:
    claims = set().union(*(claims_of(payload) for payload, _ in events))
    assert leaks(claims, client, logs) == []


def test_duplicates_under_load_are_accepted_once_and_handled_once(env, config, tmp_path, redis_client, redis_url):
    """5000 deliveries, 30% duplicates (re-signed retries and the same event under another delivery id),
    32 concurrent senders: one job per event, every handler completes exactly once per event."""
    public = config.keyring[FIXTURE_KID].public_key()
    secret = config.secrets[0]
    unique = make_events(3500, public, FIXTURE_KID, secret)
    rng = random.Random(5)
    sends = [request for _, request in unique]
    for payload, request in rng.sample(unique, 1500):
        if rng.random() < 0.5:  # the same delivery retried: same body and delivery id, fresh signature
            sends.append(resigned(request, secret))
        else:  # the same event delivered to another endpoint: encrypted again, another delivery id
            sends.append(sign_request(encrypt_payload(payload, public, FIXTURE_KID), payload["type"], secret))
    rng.shuffle(sends)
    port = free_port()
    serve_env = worker_env(env, tmp_path, KAYLE_HANDLERS=TALLY)
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as server:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=server)
        url = f"http://127.0.0.1:{port}{PATH}"
        with sender(32) as http:

            def one(request: SignedRequest) -> None:
                answer = http.post(url, content=request.body, headers=request.headers)
                assert answer.status_code == 200, answer.text[:200]
                with lock:
                    status = answer.json()["status"]
                    statuses[status] = statuses.get(status, 0) + 1

            with ThreadPoolExecutor(32) as pool:
                list(pool.map(one, sends))
    assert statuses == {"accepted": 3500, "duplicate": 1500}
    run_workers(serve_env, tmp_path / "worker.log")
    handled = {p["metadata"]["event_id"]: p["type"] for p, _ in unique}
    assert_handled_exactly_once(tmp_path / "records.jsonl", handled, tally_handlers)
    assert_nothing_leaked(redis_client, unique, tmp_path / "serve.log", tmp_path / "worker.log")


def test_redis_stopping_mid_load_loses_nothing_acknowledged(env, config, tmp_path):
    """Redis is SIGKILLed a third of the way in and restarted from its append-only file: deliveries are
    answered 503 meanwhile, never 2xx unless stored; Kayle's retries get everything in, handled once."""
    secret = config.secrets[0]
    events = make_events(400, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID, secret)
    answers: list[int] = []
    outcomes: dict[str, str] = {}
    with own_redis(tmp_path / "redis") as server:
        port = free_port()
        serve_env = worker_env(env, tmp_path, KAYLE_REDIS_URL=server.url, KAYLE_HANDLERS=TALLY)
        with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as receiver:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
            url = f"http://127.0.0.1:{port}{PATH}"
            progress = threading.Semaphore(0)

            def one(item: Event) -> None:
                payload, request = item
                with sender() as http:
                    outcomes[payload["metadata"]["event_id"]] = send_until_2xx(http, url, request, secret, answers)
                progress.release()

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(one, item) for item in events]
                for _ in range(len(events) // 3):
                    progress.acquire()
                assert server.process is not None
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
                refused = answers.count(503)
                wait_until(lambda: answers.count(503) >= refused + 20, "deliveries answered 503 during the outage")
                server.start()
                for future in futures:
                    future.result()
        client = redis.Redis.from_url(server.url)
        assert 503 in answers, "the outage was not noticed: the test did not test anything"
        assert sorted(set(answers)) in ([200, 503], [0, 200, 503])
        # Every event answered 2xx is stored: its marker and its job survived the kill.
        for payload, _ in events:
            event_id = payload["metadata"]["event_id"]
            assert marked(client, event_id)
        assert client.llen("rq:queue:kayle") == len(events)
        run_workers(serve_env, tmp_path / "worker.log")
        handled = {p["metadata"]["event_id"]: p["type"] for p, _ in events}
        assert_handled_exactly_once(tmp_path / "records.jsonl", handled, tally_handlers)
        assert_nothing_leaked(client, events, tmp_path / "serve.log", tmp_path / "worker.log")


def test_a_full_queue_turns_the_excess_away_and_takes_it_once_workers_catch_up(env, config, tmp_path, redis_client):
    """KAYLE_MAX_PENDING_EVENTS=20 and no worker: of 60 events from senders retrying like Kayle, 20 are accepted
    and the rest answered 503 queue_full; once a worker drains the queue, every event is accepted and handled
    exactly once."""
    secret = config.secrets[0]
    events = make_events(60, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID, secret)
    serve_env = worker_env(env, tmp_path, KAYLE_MAX_PENDING_EVENTS="20", KAYLE_HANDLERS=TALLY)
    port = free_port()
    answers: list[int] = []
    outcomes: dict[str, str] = {}
    with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        url = f"http://127.0.0.1:{port}{PATH}"
        sender = threading.Thread(target=send_all, args=(url, events, secret, answers, outcomes))
        sender.start()
        wait_until(lambda: len(outcomes) == 20 and answers.count(503) >= 50, "the queue full, senders turned away")
        assert Queue("kayle", connection=redis_client).count == 20 and len(outcomes) == 20
        with running(command("worker", "--simple"), serve_env, tmp_path / "worker.log"):
            sender.join(timeout=PATIENCE)
            assert not sender.is_alive()
            wait_until(lambda: Queue("kayle", connection=redis_client).count == 0, "the queue drained")
            assert_handled_eventually(tmp_path / "records.jsonl", events)
        metrics = httpx.get(f"http://127.0.0.1:{serve_env['KAYLE_ADMIN_PORT']}/metrics", timeout=10).text
    assert set(outcomes.values()) == {"accepted"} and len(outcomes) == 60
    assert 'kayle_deliveries_total{outcome="queue_full"}' in metrics
    assert "the queue is full" in (tmp_path / "serve.log").read_text()
    assert_nothing_leaked(redis_client, events, tmp_path / "serve.log", tmp_path / "worker.log")


def assert_handled_eventually(record_path: Path, events: list[Event]) -> None:
    handled = {payload["metadata"]["event_id"]: payload["type"] for payload, _ in events}
    wait_until(lambda: _all_handled(record_path, handled), "every handler of every event completing")
    assert_handled_exactly_once(record_path, handled, tally_handlers)


def _all_handled(record_path: Path, handled: dict[str, str]) -> bool:
    try:
        assert_handled_exactly_once(record_path, handled, tally_handlers)
    except AssertionError:
        return False
    return True
