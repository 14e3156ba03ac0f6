"""Redis Sentinel failover under load, with real processes: a primary, a replica, three sentinels, two receivers
and two workers, senders retrying every non-2xx as Kayle does. The primary is SIGKILLed a third of the way in;
the sentinels promote the replica, and the old primary comes back as the new one's replica (as an orchestrator
restarts a failed Redis pod): with one replica, acknowledgements that wait for a replica resume only then.

With ``KAYLE_REDIS_MIN_REPLICAS=1`` nothing acknowledged is lost; with 0 the events acknowledged in the moments
before the kill may be, and the test reports how many (README: High availability and scaling out).
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rq import Worker

from tests.helpers.privacy import claims_of, leaks
from tests.helpers.processes import command, free_port, running, serving, wait_until
from tests.helpers.redis import IN_MEMORY, RedisServer, Sentinels, replica_options, wait_in_sync
from tests.helpers.sending import PATH, Event, event_ids, make_events, send_until_2xx, sender
from tests.helpers.vectors import FIXTURE_KID
from tests.helpers.workers import TALLY, failed_ids, ok_counts, pending, read_records, tally_handlers, worker_env

pytestmark = pytest.mark.slow

SENDERS = 12


@dataclass
class Outcome:
    events: list[Event]
    acknowledged: int
    answers: list[int]
    lost: list[str]  # acknowledged, then never handled: the write did not survive the failover
    repeated: int  # handler runs beyond the first for an event
    promoted_after: float  # from the kill to the sentinels naming the replica
    accepting_after: float  # from the kill to the first 2xx after the promotion
    failed: list[str]
    leaked: list[str]
    seconds: float


def failover_under_load(env: dict[str, str], config, tmp_path: Path, count: int, min_replicas: int) -> Outcome:
    started = time.monotonic()
    secret = config.secrets[0]
    events = make_events(count, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID, secret)
    primary = RedisServer(tmp_path / "primary", options=IN_MEMORY)
    replica = RedisServer(tmp_path / "replica", options=replica_options(primary))
    sentinels = Sentinels(tmp_path / "sentinels", primary)
    answers: list[int] = []
    outcomes: dict[str, str] = {}
    logs = [tmp_path / name for name in ("serve-1.log", "serve-2.log", "worker-1.log", "worker-2.log")]
    with ExitStack() as stack:
        for server in (primary, replica, sentinels):
            server.start()
            stack.callback(server.stop)
            if server is replica:
                wait_in_sync(replica)
        serve_env = worker_env(
            env, tmp_path, KAYLE_REDIS_URL=sentinels.url, KAYLE_HANDLERS=TALLY,
            KAYLE_REDIS_MIN_REPLICAS=str(min_replicas),
        )
        receivers = [
            stack.enter_context(serving(serve_env, log, KAYLE_ADMIN_PORT=str(free_port()))) for log in logs[:2]
        ]
        for log in logs[2:]:
            stack.enter_context(running(command("worker"), serve_env, log))
        with primary.client() as client:  # both at work before the kill: a worker starting without Redis exits
            wait_until(lambda: Worker.count(connection=client) == 2, "both workers registered")
        progress = threading.Semaphore(0)

        def one(index: int) -> None:
            payload, request = events[index]
            url = receivers[index % 2].url + PATH
            with sender(1) as http:
                outcomes[payload["metadata"]["event_id"]] = send_until_2xx(http, url, request, secret, answers)
            progress.release()

        with ThreadPoolExecutor(SENDERS) as pool:
            futures = [pool.submit(one, index) for index in range(count)]
            for _ in range(count // 3):
                progress.acquire()
            assert primary.process is not None
            primary.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            primary.process.wait()
            wait_until(lambda: sentinels.primary_port() == replica.port, "the sentinels promote the replica")
            promoted = time.monotonic()
            seen = len(answers)
            primary.options = replica_options(replica)  # the old primary is back, as the new one's replica
            primary.start()
            wait_until(lambda: 200 in answers[seen:], "a delivery accepted after the promotion", every=0.01)
            accepting = time.monotonic()
            for future in futures:
                future.result()
        acknowledged = len(outcomes)
        records = tmp_path / "records.jsonl"
        with redis.Redis(port=sentinels.primary_port()) as now_primary:  # the replica, unless failed back since
            wait_until(lambda: pending(now_primary, "kayle") == 0, "the workers have run every surviving job")
            counts = ok_counts(read_records(records))
            handled = {event_id for _, event_id in counts}
            lost = [event_id for event_id in event_ids(events) if event_id not in handled]
            failed = failed_ids(now_primary, "kayle")
            claims = set().union(*(claims_of(payload) for payload, _ in events))
            leaked = leaks(claims, now_primary, logs)
    expected = {(handler, event_id) for event_id in handled for handler in tally_handlers("")}
    assert set(counts) == expected, "an event's handlers ran only in part"
    return Outcome(
        events=events,
        acknowledged=acknowledged,
        answers=answers,
        lost=lost,
        repeated=sum(n - 1 for n in counts.values()),
        promoted_after=promoted - killed,
        accepting_after=accepting - killed,
        failed=failed,
        leaked=leaked,
        seconds=time.monotonic() - started,
    )


def report(name: str, outcome: Outcome) -> None:
    count = len(outcome.events)
    print(
        f"\n{name}: {count} events in {outcome.seconds:.1f} s; sends {len(outcome.answers)}, "
        f"503s {outcome.answers.count(503)}, failed connections {outcome.answers.count(0)}; "
        f"promoted {outcome.promoted_after:.1f} s after the kill, "
        f"accepting again after {outcome.accepting_after:.1f} s; "
        f"acknowledged events lost: {len(outcome.lost)}; repeated handler runs: {outcome.repeated} "
        f"({outcome.repeated / (2 * count):.2%} of {2 * count})"
    )


def test_failover_with_min_replicas_loses_nothing_acknowledged(env, config, tmp_path):
    """1,500 events, KAYLE_REDIS_MIN_REPLICAS=1: every event is eventually answered 2xx and every handler of
    every event completes; nothing fails, no claim leaks, and handler runs repeat only around the crash."""
    outcome = failover_under_load(env, config, tmp_path, 1500, min_replicas=1)
    report("min replicas 1", outcome)
    assert outcome.acknowledged == 1500
    assert 503 in outcome.answers, "the failover was not noticed: the test did not test anything"
    assert outcome.lost == []
    assert outcome.failed == []
    assert outcome.leaked == []
    assert outcome.repeated <= 0.03 * 2 * 1500


def test_failover_without_replica_acknowledgement_is_reported(env, config, tmp_path):
    """The same run with KAYLE_REDIS_MIN_REPLICAS=0 (fewer events): how many acknowledged events the failover
    lost is printed, not asserted (asynchronous replication promises nothing for the last writes)."""
    outcome = failover_under_load(env, config, tmp_path, 600, min_replicas=0)
    report("min replicas 0", outcome)
    assert outcome.acknowledged == 600
    assert outcome.leaked == []
