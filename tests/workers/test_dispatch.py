"""Workers in this process (RQ SimpleWorker, burst) on the real Redis, fed by the real receiver app."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from rq.job import Job

from receiver.jobs import job_id
from receiver.keyring import Keyring, load_keyring
from receiver.settings import Settings
from receiver.stats import STATS_KEY
from tests.helpers.cli import run_cli
from tests.helpers.privacy import claim_values, leaks, log_texts
from tests.helpers.receiver import post_all
from tests.helpers.redis import marked
from tests.helpers.vectors import FIXTURE_KID, Fixture, by_name
from tests.helpers.workers import (
    configure_in_process,
    drain,
    failed_ids,
    ok_counts,
    pending,
    read_records,
    recorder_handlers,
    set_worker_env,
)
from workers import dispatch
from workers.jobclass import DONE_FIELD
from workers.process import work_burst
from workers.registry import Registry

pytestmark = pytest.mark.anyio

RECORDER_HANDLERS = {"succeeded", "terminal", "audit", "flaky", "broken", "hang"}


async def post(fixture: Fixture) -> str:
    return (await post_all([fixture]))[0]


def assert_private(redis_client: redis.Redis, fixtures: list[Fixture], *texts: str) -> None:
    assert leaks(claim_values(fixtures), redis_client, texts=texts) == []


async def test_every_fixture_reaches_its_handlers_exactly_once_with_its_model(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = set_worker_env(env, tmp_path, monkeypatch)
    settings = configure_in_process()
    assert await post_all(fixtures) == ["accepted"] * len(fixtures)

    drain(settings, redis_client)

    records = read_records(Path(values["KAYLE_TEST_RECORD"]))
    counts = ok_counts(records)
    for fixture in fixtures:
        for handler in RECORDER_HANDLERS:
            wanted = 1 if handler in recorder_handlers(fixture.type) else 0
            assert counts.get((handler, fixture.event_id), 0) == wanted, (fixture.name, handler)
    models = {
        "verification.session.succeeded": "SessionSucceeded",
        "verification.session.failed": "SessionFailed",
        "verification.session.expired": "SessionExpired",
        "verification.session.cancelled": "SessionCancelled",
        "verification.session.review_required": "GenericEvent",
    }
    payloads = {f.event_id: f.expected_payload for f in fixtures}
    for record in records:
        assert record["model"] == models[record["type"]]
        assert record["attempt"] == 1
        assert record["kid"] == FIXTURE_KID
        if "payload" in record:  # every field, unknown ones included, exactly as sent
            assert record["payload"] == payloads[record["event_id"]]
    future = by_name(fixtures, "verification.session.review_required")
    audit = next(r for r in records if r["handler"] == "audit" and r["event_id"] == future.event_id)
    assert audit["payload"]["data"]["review_reason"] == "age_borderline"
    assert audit["payload"]["metadata"]["review_id"] == "rev_7wxphnzm6nlrbe7j6ib8ohz1"
    assert failed_ids(redis_client, settings.queue) == []
    for fixture in fixtures:
        assert marked(redis_client, fixture.event_id)
        assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0  # with its progress
    assert_private(redis_client, fixtures, caplog.text, *log_texts(caplog))


async def test_a_handler_failing_twice_then_succeeding_does_not_rerun_the_others(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_FLAKY="2", KAYLE_RETRY_INTERVALS="1,1")
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.succeeded")
    await post(fixture)

    drain(settings, redis_client)

    records = read_records(Path(values["KAYLE_TEST_RECORD"]))
    flaky = [(r["attempt"], r["outcome"]) for r in records if r["handler"] == "flaky"]
    assert flaky == [(1, "error"), (2, "error"), (3, "ok")]
    counts = ok_counts(records)
    assert counts[("succeeded", fixture.event_id)] == 1
    assert counts[("audit", fixture.event_id)] == 1
    assert failed_ids(redis_client, settings.queue) == []
    assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0  # with its progress
    stats = redis_client.hgetall(STATS_KEY)
    assert stats[b"runs\ttests.plugins.recorder.flaky\terror"] == b"2"
    assert stats[b"runs\ttests.plugins.recorder.flaky\tok"] == b"1"
    assert_private(redis_client, fixtures, caplog.text, *log_texts(caplog))


async def test_an_always_failing_handler_waits_in_the_failed_registry_until_fixed_and_requeued(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="1,1")
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.succeeded.A192GCM")
    await post(fixture)

    drain(settings, redis_client)

    assert failed_ids(redis_client, settings.queue) == [job_id(fixture.event_id)]
    job = Job.fetch(job_id(fixture.event_id), connection=redis_client)
    stored = job.latest_result()
    assert stored is not None and stored.exc_string is not None
    assert "tests.plugins.recorder.broken raised ValueError <- KeyError" in stored.exc_string
    assert 'recorder.py", line' in stored.exc_string  # the frames are kept for the operator
    assert "cannot provision" not in stored.exc_string  # the message is not
    assert_private(redis_client, fixtures, caplog.text, *log_texts(caplog))

    status, listing, _ = run_cli(capsys, "failed", "list", "--wide")
    assert status == 0
    assert fixture.event_id in listing
    status, narrow, _ = run_cli(capsys, "failed", "list")
    assert status == 0 and max(len(line) for line in narrow.splitlines()[:-1]) <= 100, narrow
    assert "recorder.broken" in narrow and "KeyError" in narrow and fixture.event_id[:12] in narrow
    assert run_cli(capsys, "failed", "list", "--ids")[1] == f"{fixture.event_id}\n"
    assert "verification.session.succeeded" in listing
    assert "tests.plugins.recorder.broken" in listing
    assert "ValueError <- KeyError" in listing
    assert " 3 " in listing  # attempts: the first run and two retries
    assert leaks(claim_values(fixtures), texts=[listing]) == []

    flag.unlink()  # "fix" the handler
    assert run_cli(capsys, "failed", "requeue", fixture.event_id)[0] == 0
    drain(settings, redis_client)

    records = read_records(Path(values["KAYLE_TEST_RECORD"]))
    broken = [(r["attempt"], r["outcome"]) for r in records if r["handler"] == "broken"]
    assert broken == [(1, "error"), (2, "error"), (3, "error"), (4, "ok")]
    counts = ok_counts(records)
    for handler in ("succeeded", "audit", "flaky", "hang"):
        assert counts[(handler, fixture.event_id)] == 1, handler
    assert failed_ids(redis_client, settings.queue) == []
    assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0  # with its progress
    status, listing, _ = run_cli(capsys, "failed", "list")
    assert status == 0 and "no failed events" in listing
    assert_private(redis_client, fixtures, caplog.text, *log_texts(caplog))


async def test_requeue_reports_events_that_are_not_failed(
    env: dict[str, str], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "failed", "requeue", "evt_nothing")
    assert status == 1 and "evt_nothing: not in the failed registry" in err
    status, _, err = run_cli(capsys, "failed", "requeue")
    assert status == 2 and "give EVENT_ID... or --all" in err
    status, out, _ = run_cli(capsys, "failed", "requeue", "--all")
    assert status == 0 and "nothing to requeue: no failed events" in out


async def test_forget_lets_a_replay_be_accepted_and_handled_again(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = set_worker_env(env, tmp_path, monkeypatch)
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.failed")
    assert await post(fixture) == "accepted"
    # Still queued: forgetting now would let a replay run the handlers twice at once.
    status, _, err = run_cli(capsys, "forget", fixture.event_id)
    assert status == 1 and "still queued or running" in err
    drain(settings, redis_client)
    assert await post(fixture) == "duplicate"

    assert run_cli(capsys, "forget", fixture.event_id)[0] == 0
    assert not marked(redis_client, fixture.event_id)
    assert await post(fixture) == "accepted"
    drain(settings, redis_client)

    counts = ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))
    assert counts[("terminal", fixture.event_id)] == 2


async def test_forget_drops_a_failed_event_and_its_progress(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    capsys: pytest.CaptureFixture[str],
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.expired")
    await post(fixture)
    drain(settings, redis_client)
    assert failed_ids(redis_client, settings.queue) == [job_id(fixture.event_id)]
    assert json.loads(redis_client.hget(Job.key_for(job_id(fixture.event_id)), DONE_FIELD))  # handlers that completed

    assert run_cli(capsys, "forget", fixture.event_id)[0] == 0

    assert failed_ids(redis_client, settings.queue) == []
    assert not marked(redis_client, fixture.event_id)
    assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0


async def test_an_event_no_handler_wants_is_completed_and_counted(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    key_dir: Path,
) -> None:
    set_worker_env(env, tmp_path, monkeypatch)
    settings = configure_in_process()
    only_succeeded = Registry()
    only_succeeded.add(lambda event, ctx: None, ("verification.session.succeeded",))
    dispatch.configure(dispatch.Runtime(settings, load_keyring(key_dir), only_succeeded))
    fixture = by_name(fixtures, "verification.session.cancelled")
    await post(fixture)

    drain(settings, redis_client)

    assert failed_ids(redis_client, settings.queue) == []
    assert redis_client.exists(Job.key_for(job_id(fixture.event_id))) == 0
    assert redis_client.hget(STATS_KEY, "unhandled\tverification.session.cancelled") == b"1"


async def test_an_event_the_worker_cannot_decrypt_fails_with_the_reason_and_nothing_else(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    key_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    remove_fixture_key_from_workers(settings)
    fixture = by_name(fixtures, "verification.session.succeeded")
    await post(fixture)

    drain(settings, redis_client)

    assert failed_ids(redis_client, settings.queue) == [job_id(fixture.event_id)]
    assert read_records(Path(values["KAYLE_TEST_RECORD"])) == []
    status, listing, _ = run_cli(capsys, "failed", "list", "--wide")
    assert status == 0 and "workers.dispatch.EventUnreadable" in listing


async def test_a_job_listing_a_dead_execution_still_completes(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    """A worker killed after RQ listed its execution of the job, before the attempt was counted: RQ 3.0.0
    keeps that execution listed in the job's execution registry (about 60 s) after its record is gone, and
    deleting the finished job then raises ValueError inside RQ, leaving the job unfinished. The worker unlists
    such executions when that happens (``KayleJob.delete``), so the job completes."""
    values = set_worker_env(env, tmp_path, monkeypatch)
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.succeeded")
    await post(fixture)
    job = Job.fetch(job_id(fixture.event_id), connection=redis_client)
    redis_client.zadd(job.execution_registry.key, {"dead-execution": time.time() + 60})  # listed, no record

    work_burst(settings, redis_client)  # one burst: a job RQ failed to finish would stay started

    assert pending(redis_client, settings.queue) == 0 and failed_ids(redis_client, settings.queue) == []
    for key in (Job.key_for(job.id), job.execution_registry.key):
        assert redis_client.exists(key) == 0, key
    counts = ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))
    assert {h for (h, event_id), n in counts.items() if event_id == fixture.event_id and n == 1} == (
        recorder_handlers(fixture.type)
    )


async def test_a_requeued_event_that_fails_otherwise_is_listed_with_its_new_failure(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A handler failed; the operator requeues after removing the key the event is encrypted to. `failed list`
    shows the new reason (the event cannot be read) and no longer the handler that failed the first time."""
    flag = tmp_path / "broken"
    flag.touch()
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.succeeded")
    await post(fixture)
    drain(settings, redis_client)
    status, listing, _ = run_cli(capsys, "failed", "list", "--wide")
    assert status == 0 and "tests.plugins.recorder.broken" in listing

    remove_fixture_key_from_workers(settings)
    assert run_cli(capsys, "failed", "requeue", fixture.event_id)[0] == 0
    drain(settings, redis_client)

    assert failed_ids(redis_client, settings.queue) == [job_id(fixture.event_id)]
    status, listing, _ = run_cli(capsys, "failed", "list", "--wide")
    assert status == 0
    assert "workers.dispatch.EventUnreadable" in listing
    assert "tests.plugins.recorder.broken" not in listing
    assert " 2 " in listing  # attempts: the first run and the requeued one


def remove_fixture_key_from_workers(settings: Settings) -> None:
    """Run the in-process workers without the key the fixtures are encrypted to (as if it were removed)."""
    runtime = dispatch.current_runtime()
    without_fixture_key = Keyring({kid: key for kid, key in runtime.keyring.items() if kid != FIXTURE_KID})
    dispatch.configure(dispatch.Runtime(settings, without_fixture_key, runtime.registry))


async def test_a_job_whose_data_cannot_be_loaded_fails_and_the_worker_goes_on(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    """A job whose data cannot be unpickled (written by something else, or damaged) ends in the failed
    registry; the worker does not stop on it and handles the next event."""
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    damaged = by_name(fixtures, "verification.session.succeeded")
    intact = by_name(fixtures, "verification.session.failed")
    await post(damaged)
    await post(intact)
    redis_client.hset(Job.key_for(job_id(damaged.event_id)), "data", b"\x80not a pickle")

    drain(settings, redis_client)

    assert failed_ids(redis_client, settings.queue) == [job_id(damaged.event_id)]
    handled = {event_id for (_, event_id) in ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))}
    assert handled == {intact.event_id}
