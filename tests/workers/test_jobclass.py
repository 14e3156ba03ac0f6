"""Redis is not a way into the workers: whatever is written into the queue, a worker runs only event jobs."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import subprocess
import threading
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from receiver.jobs import job_id
from tests.helpers.processes import PATIENCE, command
from tests.helpers.receiver import post_all
from tests.helpers.vectors import REPO, Fixture, by_name
from tests.helpers.workers import configure_in_process, drain, failed_ids, ok_counts, read_records, set_worker_env
from workers.jobclass import KayleJob

pytestmark = pytest.mark.anyio


class Payload:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def forged(client: redis.Redis, job: Job) -> str:
    Queue("kayle", connection=client).enqueue_job(job)
    return job.id


async def test_jobs_that_would_run_code_are_failed_and_nothing_in_them_runs(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    """A pickle that runs `touch` when loaded, a JSON job naming os.system, a job naming another module's function:
    each is failed with a reason, none runs, and the worker handles the genuine event queued behind them."""
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    markers = [tmp_path / f"ran-{n}" for n in range(3)]
    pickled = Job.create("os.getcwd", connection=redis_client, id="kayle-evt_pickle")
    pickled.data = pickle.dumps(Payload(markers[0]))
    ids = [
        forged(redis_client, pickled),
        forged(redis_client, Job.create(
            "os.system", args=[f"touch {markers[1]}"], connection=redis_client, serializer=JSONSerializer,
            id="kayle-evt_system",
        )),
        forged(redis_client, Job.create(
            "tests.plugins.callbacks.touch", connection=redis_client, serializer=JSONSerializer, id="kayle-evt_other",
        )),
    ]
    monkeypatch.setenv("KAYLE_TEST_TOUCHED", str(markers[2]))
    genuine = by_name(fixtures, "verification.session.expired")
    assert await post_all([genuine]) == ["accepted"]

    drain(settings, redis_client)

    assert [m for m in markers if m.exists()] == []
    assert sorted(failed_ids(redis_client, settings.queue)) == sorted(ids)
    handled = {event_id for _, event_id in ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))}
    assert handled == {genuine.event_id}
    reasons = [KayleJob.load(i, redis_client).latest_result() for i in ids[1:]]
    assert all(r is not None and "is not an event job of kayle-webhooks" in (r.exc_string or "") for r in reasons)


async def test_callbacks_and_webhooks_written_into_a_job_are_ignored(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    """A genuine event job whose hash was given a success callback and a webhook: the event is handled, the
    callback is never called and the webhook never requested."""
    values = set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_TOUCHED=str(tmp_path / "called"))
    settings = configure_in_process()
    requests: list[str] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fixture = by_name(fixtures, "verification.session.failed")
    assert await post_all([fixture]) == ["accepted"]
    hook = {"url": f"http://127.0.0.1:{server.server_port}/hook", "job_status": "finished", "method": "POST"}
    redis_client.hset(
        Job.key_for(job_id(fixture.event_id)),
        mapping={"success_callback_name": "tests.plugins.callbacks.touch", "webhooks": json.dumps([hook])},
    )

    drain(settings, redis_client)
    server.shutdown()

    assert ("terminal", fixture.event_id) in ok_counts(read_records(Path(values["KAYLE_TEST_RECORD"])))
    assert not (tmp_path / "called").exists()
    assert requests == []


@pytest.mark.slow
async def test_a_pickle_in_a_failed_events_meta_does_not_run_in_failed_list(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
    fixtures: list[Fixture],
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    set_worker_env(env, tmp_path, monkeypatch, KAYLE_TEST_BROKEN=str(flag), KAYLE_RETRY_INTERVALS="")
    settings = configure_in_process()
    fixture = by_name(fixtures, "verification.session.cancelled")
    await post_all([fixture])
    drain(settings, redis_client)
    assert failed_ids(redis_client, settings.queue) == [job_id(fixture.event_id)]
    marker = tmp_path / "ran"
    redis_client.hset(Job.key_for(job_id(fixture.event_id)), "meta", pickle.dumps(Payload(marker)))

    for argv in (["failed", "list"], ["failed", "requeue", "--all"]):
        result = subprocess.run(
            command(*argv), env=dict(os.environ), cwd=REPO, capture_output=True, text=True, timeout=PATIENCE
        )
        assert result.returncode == 0, result.stderr
        assert fixture.event_id[:12] in result.stdout
    assert not marker.exists()
