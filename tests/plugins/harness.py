"""Helpers for the worker tests: environment, an in-process burst worker, the privacy sweep."""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from receiver.settings import Settings, load_config
from tests.support import FIXTURE_TIME, Fixture
from workers import dispatch
from workers.plugins import load_handlers
from workers.process import work_burst

RECORDER = "tests.plugins.recorder"


def worker_env(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> dict[str, str]:
    """``env`` plus the recorder plugin, its record file, the example plugin's store and fast timings."""
    values = {
        **env,
        "KAYLE_HANDLERS": RECORDER,
        "KAYLE_TEST_RECORD": str(tmp_path / "records.jsonl"),
        "KAYLE_EXAMPLE_DB": str(tmp_path / "example.sqlite3"),
        "KAYLE_ABANDONED_JOB_SECONDS": "6",
        **extra,
    }
    for name in ("KAYLE_TEST_FLAKY", "KAYLE_TEST_BROKEN", "KAYLE_TEST_HANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def configure_in_process() -> Settings:
    """What ``kayle-webhooks worker`` does before working, for this test process."""
    config = load_config(need_secrets=False)
    dispatch.configure(dispatch.Runtime(config.settings, config.keyring, load_handlers(config.settings)))
    return config.settings


def pending(client: redis.Redis, queue: str) -> int:
    """Jobs still queued, running or scheduled for a retry."""
    q = Queue(queue, connection=client)
    return (
        q.count
        + StartedJobRegistry(queue, connection=client).count
        + ScheduledJobRegistry(queue, connection=client).count
    )


def drain(settings: Settings, client: redis.Redis, timeout: float = 20.0) -> None:
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


def _variants(blob: bytes) -> list[bytes]:
    """The blob, and what it holds if it is zlib data or base64 of zlib data (RQ compresses exc_info)."""
    found = [blob]
    for decode in (lambda b: b, lambda b: base64.b64decode(b, validate=True)):
        try:
            found.append(zlib.decompress(decode(blob)))
        except (binascii.Error, zlib.error, ValueError):
            continue
    return found


def redis_blobs(client: redis.Redis) -> list[bytes]:
    """Every key and value in the database, decompressed where RQ compressed it."""
    blobs: list[bytes] = []
    for key in client.scan_iter(count=1000):
        blobs.append(key)
        kind = client.type(key)
        raw: list[bytes] = []
        if kind == b"string":
            raw = [client.get(key) or b""]
        elif kind == b"hash":
            raw = [part for pair in client.hgetall(key).items() for part in pair]
        elif kind == b"list":
            raw = list(client.lrange(key, 0, -1))
        elif kind == b"set":
            raw = list(client.smembers(key))
        elif kind == b"zset":
            raw = list(client.zrange(key, 0, -1))
        elif kind == b"stream":
            raw = [part for _, fields in client.xrange(key) for pair in fields.items() for part in pair]
        for value in raw:
            blobs.extend(_variants(value))
    return blobs


def leaked(claims: Iterable[str], blobs: Iterable[bytes], texts: Iterable[str] = ()) -> set[str]:
    """The claim values found in Redis blobs or in texts (logs, command output)."""
    blob_list, text_list = list(blobs), list(texts)
    found = set()
    for claim in claims:
        encoded = claim.encode("utf-8")
        if any(encoded in blob for blob in blob_list) or any(claim in text for text in text_list):
            found.add(claim)
    return found


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each captured record's message with its structured fields."""
    return [f"{r.getMessage()} {getattr(r, 'kayle_fields', {})}" for r in caplog.records]


@contextlib.asynccontextmanager
async def receiver_client() -> AsyncIterator[httpx.AsyncClient]:
    """The receiver app configured from the current environment, its clock at the fixtures' timestamp."""
    from receiver.app import create_app

    app = create_app(load_config(), clock=lambda: float(FIXTURE_TIME))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as http:
        yield http


async def post_all(fixtures: Iterable[Fixture]) -> list[str]:
    """Deliver fixtures through the receiver app; return each answer's status."""
    outcomes = []
    async with receiver_client() as client:
        for fixture in fixtures:
            response = await client.post("/webhooks/kayle", content=fixture.body, headers=fixture.headers)
            assert response.status_code == 200, response.text
            outcomes.append(str(response.json()["status"]))
    return outcomes
