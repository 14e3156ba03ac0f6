"""Workers for the tests: their environment, in-process burst workers, the queue's state, handler records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from receiver.settings import Settings, load_config
from tests.helpers.processes import PATIENCE, subprocess_env
from workers import dispatch
from workers.plugins import load_handlers
from workers.process import work_burst

RECORDER = "tests.plugins.recorder"
_SWITCHES = ("KAYLE_TEST_FLAKY", "KAYLE_TEST_BROKEN", "KAYLE_TEST_HANG")


def worker_env(base: Mapping[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """A worker's (and receiver's) environment for a subprocess: ``base`` plus the recorder plugin, its record
    file, fast abandoned-job recovery and a signature window that a busy machine cannot miss."""
    defaults = {
        "KAYLE_HANDLERS": RECORDER,
        "KAYLE_TEST_RECORD": str(tmp_path / "records.jsonl"),
        "KAYLE_ABANDONED_JOB_SECONDS": "6",
        "KAYLE_TOLERANCE_SECONDS": "600",
    }
    return subprocess_env(base, **{**defaults, **extra})


def set_worker_env(
    base: Mapping[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> dict[str, str]:
    """:func:`worker_env`, set in this process too (for in-process workers); the recorder's switches cleared."""
    for name in _SWITCHES:
        monkeypatch.delenv(name, raising=False)
    values = {k: v for k, v in worker_env(base, tmp_path, **extra).items() if k.startswith("KAYLE_")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def configure_in_process() -> Settings:
    """What ``kayle-webhooks worker`` does before working, for this test process."""
    config = load_config(need_secrets=False)
    dispatch.configure(dispatch.Runtime(config.settings, config.keyring, load_handlers(config.settings)))
    return config.settings


def pending(client: redis.Redis, queue: str) -> int:
    """Jobs still queued, running or scheduled for a retry (or dequeued and not yet started: RQ's intermediate
    list, where a job stays stranded when its worker or the Redis primary died in between; the list may also
    keep the id of a job that ran and is gone, until RQ's maintenance drops it, which is not pending)."""
    q = Queue(queue, connection=client)
    stranded = [job_id.decode() for job_id in client.lrange(q.intermediate_queue_key, 0, -1)]
    return (
        q.count
        + sum(int(client.exists(Job.key_for(job_id))) for job_id in stranded)
        + StartedJobRegistry(queue, connection=client).count
        + ScheduledJobRegistry(queue, connection=client).count
    )


def drain(settings: Settings, client: redis.Redis, timeout: float = PATIENCE) -> None:
    """Run in-process burst workers until nothing is queued, running or scheduled."""
    deadline = time.monotonic() + timeout
    while True:
        work_burst(settings, client)
        if not pending(client, settings.queue):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still pending after the deadline")
        time.sleep(0.2)


def failed_ids(client: redis.Redis, queue: str) -> list[str]:
    return list(FailedJobRegistry(queue, connection=client).get_job_ids())


def read_records(path: Path) -> list[dict[str, Any]]:
    """The lines the test handlers (``tests.plugins``) recorded."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ok_counts(records: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """How many times each (handler, event id) completed."""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        if record["outcome"] == "ok":
            key = (record["handler"], record["event_id"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def recorder_handlers(event_type: str) -> set[str]:
    """The handlers of ``tests.plugins.recorder`` an event of ``event_type`` runs."""
    own = {"verification.session.succeeded": {"succeeded"}}.get(event_type, set())
    if event_type in ("verification.session.failed", "verification.session.expired", "verification.session.cancelled"):
        own = {"terminal"}
    return own | {"audit", "flaky", "broken", "hang"}


TALLY = "tests.plugins.tally"  # two light handlers, for loads: first and second, for every event


def tally_handlers(event_type: str) -> set[str]:
    return {"first", "second"}


def assert_handled_exactly_once(
    record_path: Path, events: Mapping[str, str], handlers_for: Callable[[str], set[str]] = recorder_handlers
) -> None:
    """Every handler of every event (id -> type) completed, and exactly once (the recorder's, or ``handlers_for``)."""
    counts = ok_counts(read_records(record_path))
    expected = {(handler, event_id) for event_id, kind in events.items() for handler in handlers_for(kind)}
    missing = expected - set(counts)
    twice = {key: n for key, n in counts.items() if n != 1}
    assert not missing, f"{len(missing)} handler runs missing, e.g. {sorted(missing)[:3]}"
    assert not twice, f"handled more than once: {sorted(twice.items())[:3]}"
    assert set(counts) == expected


def handled_again(worker_log: Path) -> list[str]:
    """The events the worker's log says were handled on a second attempt."""
    lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line.startswith("{")]
    return [line["event_id"] for line in lines if line["message"] == "event handled" and line["attempt"] > 1]
