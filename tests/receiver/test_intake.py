"""Atomic intake: one job per event under concurrency, nothing half-written, 503 when Redis fails."""

from __future__ import annotations

import asyncio
import dataclasses
import zlib

import httpx
import pytest
from rq import Queue

from kayle_webhooks.testing import sign_request
from receiver import dedup
from receiver.app import create_app
from receiver.connections import async_redis
from receiver.errors import Unavailable
from receiver.jobs import job_id
from receiver.settings import load_config
from tests.helpers.processes import free_port
from tests.helpers.receiver import admin_client, receiver_client
from tests.helpers.redis import marked
from tests.helpers.sending import PATH
from tests.helpers.vectors import FIXTURE_TIME

pytestmark = pytest.mark.anyio


async def test_twenty_concurrent_copies_of_one_event_make_exactly_one_job(client, fixtures, redis_client):
    fixture = fixtures[0]
    copies = []
    for n in range(20):
        if n % 2:  # a retry of the same delivery, re-signed
            copies.append(
                sign_request(
                    fixture.body, fixture.type, fixture.secret, FIXTURE_TIME + n, fixture.headers["X-Kayle-Delivery-Id"]
                )
            )
        else:  # the same event under another delivery id (another subscribed endpoint)
            copies.append(sign_request(fixture.body, fixture.type, fixture.secret, FIXTURE_TIME - n))
    answers = await asyncio.gather(*(client.post(PATH, content=c.body, headers=c.headers) for c in copies))
    assert [a.status_code for a in answers] == [200] * 20
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["accepted"] + ["duplicate"] * 19
    queue = Queue("kayle", connection=redis_client)
    assert queue.job_ids == [job_id(fixture.event_id)]


async def test_a_failure_inside_the_intake_leaves_no_marker_and_no_job(client, fixtures, redis_client):
    """Redis refuses the write after the job would be stored (the queue key has the wrong type)."""
    fixture = fixtures[0]
    redis_client.set("rq:queue:kayle", "not a list")
    answer = await client.post(PATH, content=fixture.body, headers=fixture.headers)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
    assert not marked(redis_client, fixture.event_id)
    assert not redis_client.exists(f"rq:job:{job_id(fixture.event_id)}")
    assert redis_client.keys("*") == [b"rq:queue:kayle"]

    redis_client.delete("rq:queue:kayle")  # Redis is healthy again: Kayle's retry is accepted, not a duplicate
    retry = await client.post(PATH, content=fixture.body, headers=fixture.headers)
    assert retry.json()["status"] == "accepted"
    assert Queue("kayle", connection=redis_client).job_ids == [job_id(fixture.event_id)]


async def test_redis_unreachable_answers_503_and_stores_nothing(env, monkeypatch, fixtures, redis_client):
    monkeypatch.setenv("KAYLE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(load_config(), clock=lambda: float(FIXTURE_TIME))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        answer = await http.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
    assert answer.status_code == 503
    assert answer.json() == {"error": {"code": "unavailable", "message": "the event store is unavailable; retry later"}}
    assert redis_client.dbsize() == 0


async def test_an_event_whose_job_still_exists_is_a_duplicate_whatever_its_marker_says(
    client, fixtures, redis_client, config
):
    """A marker that expired (or was dropped) while the event's job still waits, runs or sits failed: the redelivery
    is a duplicate and leaves the job as it was (it used to reset it to queued, and RQ then deleted it)."""
    fixture = fixtures[0]
    assert (await client.post(PATH, content=fixture.body, headers=fixture.headers)).json()["status"] == "accepted"
    job_key = f"rq:job:{job_id(fixture.event_id)}"
    redis_client.hset(job_key, mapping={"status": "failed", "kayle_attempts": "3"})
    before = redis_client.hgetall(job_key)
    assert dedup.forget(redis_client, config.settings.dedup_ttl_seconds, fixture.event_id)

    again = await client.post(PATH, content=fixture.body, headers=fixture.headers)

    assert again.json()["status"] == "duplicate"
    assert redis_client.hgetall(job_key) == before
    assert Queue("kayle", connection=redis_client).job_ids == [job_id(fixture.event_id)]


def test_a_dedup_window_shorter_than_an_events_life_is_refused(monkeypatch) -> None:
    from receiver.settings import ConfigError, read_settings

    monkeypatch.setenv("KAYLE_DEDUP_TTL_SECONDS", "60")
    with pytest.raises(ConfigError) as short:
        read_settings()
    message = str(short.value)
    assert message.startswith("KAYLE_DEDUP_TTL_SECONDS (60 s) must be at least") and "\n" not in message
    assert "KAYLE_JOB_TIMEOUT_SECONDS" in message and "KAYLE_FAILURE_TTL_SECONDS" in message
    monkeypatch.setenv("KAYLE_JOB_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("KAYLE_RETRY_INTERVALS", "1,2")
    monkeypatch.setenv("KAYLE_FAILURE_TTL_SECONDS", "60")
    assert read_settings().dedup_ttl_seconds == 60  # 5 s x 3 attempts + 3 s fits


async def test_the_stored_job_is_the_one_rq_itself_would_store(client, fixtures, redis_client, config):
    """The intake writes RQ's job hash from a template; it must equal what RQ's own enqueue writes."""
    from rq.job import Job

    from receiver.jobs import SERIALIZER, JobArgs, build_job

    fixture = fixtures[0]
    await client.post(PATH, content=fixture.body, headers=fixture.headers)
    ours = redis_client.hgetall(f"rq:job:{job_id(fixture.event_id)}")

    stored = Job.fetch(job_id(fixture.event_id), connection=redis_client, serializer=SERIALIZER)
    args = JobArgs(**stored.kwargs)
    theirs_job = build_job(args, config.settings, redis_client)
    Queue("kayle", connection=redis_client).enqueue_job(theirs_job)
    theirs = redis_client.hgetall(f"rq:job:{job_id(fixture.event_id)}")

    timestamps = {b"created_at", b"enqueued_at"}
    # RQ compresses its data, ours is plain: what RQ reads back from each is the same call.
    assert ours.pop(b"data") == zlib.decompress(theirs.pop(b"data")) == stored.data
    assert {k: v for k, v in ours.items() if k not in timestamps} == {
        k: v for k, v in theirs.items() if k not in timestamps
    }
    assert set(ours) == set(theirs)
    assert args.kwargs() == dataclasses.asdict(args)


async def test_one_bad_event_in_a_batch_fails_alone(config, fixtures, redis_client):
    """Concurrent deliveries share one pipeline; a Redis error on one of them answers 503 for that one only."""
    from receiver.intake import Intake
    from receiver.jobs import JobArgs

    bad, *good = fixtures[:4]
    redis_client.set(f"rq:job:{job_id(bad.event_id)}", "not a hash")
    client = async_redis(config.settings)
    intake = Intake(client, config.settings)
    jobs = [JobArgs(f.body.decode(), f.event_id, f.type, "kid", None, FIXTURE_TIME) for f in [bad, *good]]
    try:
        outcomes = await asyncio.gather(*(intake.store(job) for job in jobs), return_exceptions=True)
    finally:
        await client.aclose()
    assert isinstance(outcomes[0], Unavailable)
    assert outcomes[1:] == ["accepted"] * len(good)
    assert not marked(redis_client, bad.event_id)
    assert Queue("kayle", connection=redis_client).job_ids == [job_id(f.event_id) for f in good]


async def test_deliveries_are_accepted_after_redis_forgets_its_scripts(client, fixtures, redis_client):
    """After a Redis restart (or SCRIPT FLUSH) the intake script is loaded again, within the same request."""
    first, second = fixtures[:2]
    assert (await client.post(PATH, content=first.body, headers=first.headers)).json()["status"] == "accepted"
    redis_client.script_flush()
    answer = await client.post(PATH, content=second.body, headers=second.headers)
    assert answer.status_code == 200
    assert answer.json()["status"] == "accepted"
    assert Queue("kayle", connection=redis_client).job_ids == [job_id(first.event_id), job_id(second.event_id)]


async def test_a_full_queue_answers_503_queue_full_and_duplicates_still_200(
    env, monkeypatch, fixtures, redis_client, caplog
):
    monkeypatch.setenv("KAYLE_MAX_PENDING_EVENTS", "3")
    first, second, third, fourth, fifth = fixtures[:5]
    async with receiver_client() as http:
        for fixture in (first, second, third):
            answer = await http.post(PATH, content=fixture.body, headers=fixture.headers)
            assert answer.json()["status"] == "accepted"
        full = await http.post(PATH, content=fourth.body, headers=fourth.headers)
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        again = await http.post(PATH, content=second.body, headers=second.headers)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert (await http.post(PATH, content=fifth.body, headers=fifth.headers)).status_code == 503
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "queue is full" in r.getMessage()]
        assert len(warnings) == 1  # said once, not once per delivery

        Queue("kayle", connection=redis_client).pop_job_id()  # a worker took one
        retried = await http.post(PATH, content=fourth.body, headers=fourth.headers)
        assert retried.json()["status"] == "accepted"
        assert any("has room again" in r.getMessage() for r in caplog.records)
    async with admin_client() as admin:
        metrics = (await admin.get("/metrics")).text
    assert 'kayle_deliveries_total{outcome="queue_full"} 2.0' in metrics
    assert not marked(redis_client, fifth.event_id)
