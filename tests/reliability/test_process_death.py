"""Processes die under load: a worker SIGKILLed mid-handler, the receiver SIGKILLed and restarted,
SIGTERM to a worker and to the receiver.

What must hold: nothing acknowledged (answered 2xx) is lost, and nothing is handled twice except a
handler that was interrupted mid-run. Delivery to handlers is at-least-once: a handler caught
mid-run by a SIGKILL runs again in full, so handlers must be idempotent. The handlers of
``tests.plugins.timed_handlers`` record a ``started`` and an ``ok`` line each, so the tests
know exactly which (handler, event) pairs were running when a process died.

Every test also ends with the privacy sweep of the conftest (its Redis database and every
``*.log`` file these processes wrote).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry

from receiver.jobs import job_id
from receiver.settings import Config
from tests.helpers.processes import (
    command,
    free_port,
    process_table,
    running,
    start_group,
    stop_group,
    wait_for_http,
    wait_until,
)
from tests.helpers.redis import marked
from tests.helpers.sending import PATH, Event, event_ids, make_events, send_all
from tests.helpers.vectors import FIXTURE_KID
from tests.helpers.workers import (
    TALLY,
    assert_handled_exactly_once,
    failed_ids,
    handled_again,
    ok_counts,
    pending,
    read_records,
    tally_handlers,
    worker_env,
)

pytestmark = pytest.mark.slow

QUEUE = "kayle"
HANDLERS = ("first", "slow", "last")  # tests.plugins.timed_handlers (not imported here: it would register them)


def timed_env(base: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """A worker's environment with the start/end-recording handlers and fast abandoned-job recovery."""
    return worker_env(base, tmp_path, KAYLE_HANDLERS="tests.plugins.timed_handlers", **extra)


def events_for(config: Config, count: int) -> list[Event]:
    return make_events(count, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID, config.secrets[0])


def counts(records: list[dict[str, Any]], outcome: str) -> Counter[tuple[str, str]]:
    return Counter((r["handler"], r["event_id"]) for r in records if r["outcome"] == outcome)


def run_workers(env: dict[str, str], log_path: Path) -> None:
    with running(command("worker", "--burst", "--simple", "--processes", "2"), env, log_path) as worker:
        assert worker.wait(timeout=600) == 0


def kill_worker_and_horses(group: int) -> list[int]:
    """SIGKILL a worker's process group and the work horses it forked (RQ puts each horse in a group of its
    own); the group is stopped first so that no new horse is forked meanwhile. Returns the horses' pids."""
    os.killpg(group, signal.SIGSTOP)
    table = process_table()
    workers = {pid for pid, (_, pgid) in table.items() if pgid == group}
    horses = [pid for pid, (ppid, pgid) in table.items() if ppid in workers and pgid != group]
    for horse in horses:
        os.killpg(horse, signal.SIGKILL)
    os.killpg(group, signal.SIGKILL)
    return horses


def test_a_worker_killed_mid_handler_under_load_reruns_only_the_interrupted_handlers(
    env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """300 deliveries through a real receiver, handled by a forking worker (2 processes). Its `slow` handler
    stalls on two chosen events, so both work horses are certainly mid-handler when the worker is SIGKILLed
    (its process group and its horses, as when a container dies) with the rest of the load still queued.
    Another worker takes over. Every handler of every event completes; a (handler, event) pair runs twice
    only if it was running in a killed horse (at-least-once: an interrupted handler runs again in full, the
    handlers that had completed do not); nothing ends in the failed registry."""
    events = events_for(config, 300)
    ids = event_ids(events)
    stalled = {ids[100], ids[101]}
    records_path = tmp_path / "records.jsonl"
    # Retry interval 0: an abandoned job is requeued at once, not scheduled (the killed worker may hold
    # RQ's scheduler lock, which only expires about 60 s later).
    serve_env = timed_env(env, tmp_path, KAYLE_RETRY_INTERVALS="0")
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    answers: list[int] = []
    outcomes: dict[str, str] = {}

    def horses_stalled() -> bool:
        started = counts(read_records(records_path), "started")
        return all(started["slow", event_id] for event_id in stalled)

    with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        first = start_group(
            command("worker", "--processes", "2"),
            {**serve_env, "KAYLE_TEST_STALL": ",".join(stalled)},
            tmp_path / "first.log",
        )
        sender = threading.Thread(target=send_all, args=(url, events, config.secrets[0], answers, outcomes))
        try:
            sender.start()
            wait_until(horses_stalled, "the first worker reaching the stalled events")
            horses = kill_worker_and_horses(first.pid)
        finally:
            stop_group(first)
            sender.join(timeout=300)
    assert set(outcomes.values()) == {"accepted"} and len(outcomes) == len(events)

    at_kill = read_records(records_path)
    last_line = {r["pid"]: r for r in at_kill if r["pid"] in horses}  # each killed horse's last record
    interrupted = {(r["handler"], r["event_id"]) for r in last_line.values() if r["outcome"] == "started"}
    assert len(horses) == 2 and interrupted == {("slow", event_id) for event_id in stalled}, last_line
    assert len({r["event_id"] for r in at_kill}) < len(events) // 2  # most of the load was still queued

    with running(command("worker", "--processes", "2"), serve_env, tmp_path / "second.log"):
        expected = {(handler, event_id) for event_id in ids for handler in HANDLERS}
        wait_until(lambda: expected <= set(ok_counts(read_records(records_path))), "every handler completing")
        wait_until(lambda: not pending(redis_client, QUEUE), "the queue draining")

    records = read_records(records_path)
    completed, started = counts(records, "ok"), counts(records, "started")
    assert set(completed) == set(started) == expected
    assert {pair for pair, n in started.items() if n > 1} == interrupted, "a handler that had completed ran again"
    assert set(completed.values()) == {1} and max(started.values()) == 2
    for event_id in stalled:  # `first` completed before the kill; `slow` and `last` ran in the retry (attempt 2)
        runs = [(r["handler"], r["attempt"]) for r in records if r["event_id"] == event_id]
        assert runs == [("first", 1)] * 2 + [("slow", 1)] + [("slow", 2)] * 2 + [("last", 2)] * 2
    assert failed_ids(redis_client, QUEUE) == []
    assert not list(redis_client.scan_iter("rq:job:*"))  # every job finished, its progress with it


@dataclass
class Interrupted:
    """What happened when a receiver was signalled a third of the way into a load and then restarted."""

    events: list[Event]
    serve_env: dict[str, str]
    answers: list[int]
    outcomes: dict[str, str]
    exit_code: int
    at: int  # events accepted when the receiver stopped


def interrupt_receiver_under_load(
    count: int, sig: signal.Signals, env: dict[str, str], config: Config, tmp_path: Path, redis_url: str
) -> Interrupted:
    """``count`` events from 8 senders retrying like Kayle; ``sig`` to the receiver once a third are accepted;
    a new receiver on the same port takes the rest, until every sender is done."""
    events = events_for(config, count)
    serve_env = worker_env(env, tmp_path, KAYLE_HANDLERS=TALLY)
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    serve = command("serve", "--port", str(port))
    answers: list[int] = []
    outcomes: dict[str, str] = {}
    sender = threading.Thread(target=send_all, args=(url, events, config.secrets[0], answers, outcomes))

    with running(serve, serve_env, tmp_path / "serve-1.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        sender.start()
        wait_until(lambda: len(outcomes) >= len(events) // 3, "a third of the events accepted")
        receiver.send_signal(sig)
        exit_code = receiver.wait(timeout=60)
        at = len(outcomes)
    with running(serve, serve_env, tmp_path / "serve-2.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        sender.join(timeout=600)
        assert not sender.is_alive()
    return Interrupted(events, serve_env, answers, outcomes, exit_code, at)


def test_a_receiver_killed_mid_load_and_restarted_loses_nothing_it_acknowledged(
    env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """400 events, 8 senders retrying every non-2xx and every connection error as Kayle does; the receiver is
    SIGKILLed a third of the way in and restarted on the same port. Every event answered 2xx has exactly one
    job; a request cut by the kill after its event was stored is answered "duplicate" on its retry (acceptance
    is at-least-once on the wire, exactly once per event id); workers then handle every event exactly once."""
    run = interrupt_receiver_under_load(400, signal.SIGKILL, env, config, tmp_path, redis_url)
    events, answers, outcomes, killed_at = run.events, run.answers, run.outcomes, run.at

    print(f"killed after {killed_at} accepted; outcomes {Counter(outcomes.values())}")  # reported with -s
    assert 0 in answers, "no request failed: the kill was not noticed, the test did not test anything"
    assert killed_at < len(events)
    assert len(outcomes) == len(events) and set(outcomes.values()) <= {"accepted", "duplicate"}
    ids = event_ids(events)
    queued = Queue(QUEUE, connection=redis_client).get_job_ids()
    assert sorted(queued) == sorted(job_id(event_id) for event_id in ids)  # one job per event, none twice
    for event_id in ids:
        assert marked(redis_client, event_id) and redis_client.exists(Job.key_for(job_id(event_id))), event_id
    run_workers(run.serve_env, tmp_path / "worker.log")
    handled = {p["metadata"]["event_id"]: p["type"] for p, _ in events}
    assert_handled_exactly_once(tmp_path / "records.jsonl", handled, tally_handlers)
    assert failed_ids(redis_client, QUEUE) == []


def test_sigterm_lets_a_worker_finish_its_current_job_and_leaves_the_rest_queued(
    env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """SIGTERM to a forking worker while a slow handler runs (RQ's warm shutdown): the job finishes, each of
    its handlers recorded once, the worker exits 0; a worker started afterwards handles the 19 queued events,
    and every handler of every event ran exactly once (nothing was interrupted, so nothing ran twice)."""
    events = events_for(config, 20)
    ids = event_ids(events)
    records_path = tmp_path / "records.jsonl"
    base = timed_env(env, tmp_path)
    port = free_port()
    with running(command("serve", "--port", str(port)), base, tmp_path / "serve.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        send_all(f"http://127.0.0.1:{port}{PATH}", events, config.secrets[0], [], {})

    worker = start_group(command("worker"), {**base, "KAYLE_TEST_SLOW_SECONDS": "2"}, tmp_path / "first.log")
    try:
        wait_until(lambda: any(r["handler"] == "slow" for r in read_records(records_path)), "the slow handler")
        when_signalled = read_records(records_path)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
    finally:
        stop_group(worker)

    records = read_records(records_path)
    current = records[0]["event_id"]
    assert [r["outcome"] for r in when_signalled if r["handler"] == "slow"] == ["started"]  # signalled mid-handler
    assert counts(records, "ok") == {(handler, current): 1 for handler in HANDLERS}  # the current job, finished
    assert counts(records, "started") == {(handler, current): 1 for handler in HANDLERS}
    assert Queue(QUEUE, connection=redis_client).count == len(events) - 1
    assert StartedJobRegistry(QUEUE, connection=redis_client).count == 0
    assert not redis_client.exists(Job.key_for(job_id(current)))

    with running(command("worker", "--burst"), base, tmp_path / "second.log") as second:
        assert second.wait(timeout=300) == 0
    records = read_records(records_path)
    expected = {(handler, event_id): 1 for event_id in ids for handler in HANDLERS}
    assert counts(records, "started") == expected and counts(records, "ok") == expected
    assert {r["attempt"] for r in records} == {1}
    assert failed_ids(redis_client, QUEUE) == [] and not pending(redis_client, QUEUE)


def test_sigterm_to_the_receiver_under_load_answers_what_is_in_flight_and_exits_cleanly(
    env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """SIGTERM to the receiver a third of the way into 300 events (8 senders retrying like Kayle): uvicorn stops
    accepting, answers the requests it is working on, and exits; no 2xx without a job. A restarted receiver
    takes the rest. No event is answered "duplicate": no request whose event was stored went unanswered."""
    run = interrupt_receiver_under_load(300, signal.SIGTERM, env, config, tmp_path, redis_url)
    events, answers, outcomes, stopped_at = run.events, run.answers, run.outcomes, run.at
    # uvicorn shuts down gracefully, then re-raises the signal it caught: death by SIGTERM, not a crash.
    assert run.exit_code == -signal.SIGTERM
    first_log = (tmp_path / "serve-1.log").read_text(errors="replace")
    assert "Traceback" not in first_log and "Finished server process" in first_log, first_log[-2000:]

    print(f"stopped after {stopped_at} accepted; answers {Counter(answers)}")  # reported with -s
    assert stopped_at < len(events) and 0 in answers
    assert set(outcomes.values()) == {"accepted"} and len(outcomes) == len(events)
    queued = Queue(QUEUE, connection=redis_client).get_job_ids()
    assert sorted(queued) == sorted(job_id(event_id) for event_id in event_ids(events))


def test_a_work_horse_lost_after_its_handlers_completed_does_not_run_them_again(
    env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """10 events whose work horse is SIGKILLed just after their last handler was recorded as completed, before
    RQ marked the job finished (the timed handlers' KAYLE_TEST_DIE_AFTER). The job runs again (attempt 2);
    no handler was interrupted, so none should start again, and the retry's success leaves no job behind."""
    events = events_for(config, 10)
    ids = event_ids(events)
    base = timed_env(env, tmp_path, KAYLE_RETRY_INTERVALS="0", KAYLE_TEST_DIE_AFTER=",".join(ids))
    port = free_port()
    with running(command("serve", "--port", str(port)), base, tmp_path / "serve.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        send_all(f"http://127.0.0.1:{port}{PATH}", events, config.secrets[0], [], {})
    with running(command("worker", "--burst"), base, tmp_path / "worker.log") as worker:
        assert worker.wait(timeout=300) == 0

    records = read_records(tmp_path / "records.jsonl")
    retried = handled_again(tmp_path / "worker.log")
    print(f"attempts {Counter(r['attempt'] for r in records)}; {len(retried)} jobs ran again")  # reported with -s
    assert retried, "no work horse was lost between its last handler and the job's end: nothing was tested"
    expected = {(handler, event_id): 1 for event_id in ids for handler in HANDLERS}
    assert counts(records, "ok") == expected, "a handler that had completed ran again"
    assert failed_ids(redis_client, QUEUE) == [] and not pending(redis_client, QUEUE)
    assert not list(redis_client.scan_iter("rq:job:*")), "a finished event left its job (and progress)"
