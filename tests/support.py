"""Helpers shared by the tests: fixtures on disk, a private Redis database, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_TIME = 1767225600
FIXTURE_KID = "fixture-key-1"


@dataclass(frozen=True)
class Fixture:
    name: str
    headers: dict[str, str]
    body: bytes
    secret: str
    kid: str
    enc: str
    timestamp: int
    expected_plaintext: bytes
    expected_payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.expected_payload["metadata"]["event_id"])

    @property
    def type(self) -> str:
        return str(self.expected_payload["type"])


def load_fixtures() -> list[Fixture]:
    index = json.loads((FIXTURES / "index.json").read_text())
    found = []
    for entry in index["files"]:
        raw = json.loads((FIXTURES / entry["file"]).read_text(encoding="utf-8"))
        found.append(
            Fixture(
                name=entry["file"].removesuffix(".json"),
                headers=raw["headers"],
                body=raw["body"].encode("ascii"),
                secret=raw["secret"],
                kid=raw["kid"],
                enc=raw["enc"],
                timestamp=raw["timestamp"],
                expected_plaintext=raw["expected_plaintext"].encode("utf-8"),
                expected_payload=raw["expected_payload"],
            )
        )
    return found


def claim_values(fixtures: list[Fixture]) -> set[str]:
    """Every claim value sent in the fixtures that is distinctive enough to search for."""
    values: set[str] = set()
    for fixture in fixtures:
        claims = fixture.expected_payload.get("data", {}).get("claims") or {}
        for value in claims.values():
            if isinstance(value, str) and len(value) >= 4:
                values.add(value)
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_redis_url() -> str:
    return os.environ.get("KAYLE_TEST_REDIS_URL") or os.environ.get("KAYLE_REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextmanager
def private_database() -> Iterator[str]:
    """Claim an empty numbered database on the test Redis for this run; flush it afterwards."""
    base = redis.Redis.from_url(base_redis_url())
    prefix = base_redis_url().rsplit("/", 1)[0] if base_redis_url().count("/") > 2 else base_redis_url()
    lock_key = "kayle-webhooks-tests:db:{}"
    for number in range(15, 0, -1):
        if base.set(lock_key.format(number), os.getpid(), nx=True, ex=3 * 3600):
            client = redis.Redis.from_url(f"{prefix}/{number}")
            if client.dbsize() == 0:
                try:
                    yield f"{prefix}/{number}"
                finally:
                    client.flushdb()
                    base.delete(lock_key.format(number))
                return
            base.delete(lock_key.format(number))
    raise RuntimeError("no empty Redis database (1-15) is free for the tests")


def wait_for_http(url: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def command(*args: str) -> list[str]:
    """Run the installed console script through this interpreter's environment."""
    return [sys.executable, "-m", "workers.cli", *args]


@contextmanager
def running(
    argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """A real subprocess with its output captured to ``log_path``; terminated on exit."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def sample_claim_values() -> set[str]:
    """Distinctive claim values that receiver.sender.sample_payload sends."""
    from receiver.sender import sample_payload

    claims = sample_payload("verification.session.succeeded")["data"]["claims"]
    return {v for k, v in claims.items() if isinstance(v, str) and len(v) >= 6 and not k.startswith("kayle_")}


def redis_blobs(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key and value in the database as bytes (compressed RQ fields decompressed too)."""
    import zlib

    readers = {
        "string": lambda pipe, key: pipe.get(key),
        "hash": lambda pipe, key: pipe.hgetall(key),
        "list": lambda pipe, key: pipe.lrange(key, 0, -1),
        "set": lambda pipe, key: pipe.smembers(key),
        "zset": lambda pipe, key: pipe.zrange(key, 0, -1),
        "stream": lambda pipe, key: pipe.xrange(key),
    }
    keys = list(client.scan_iter(count=1000))
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.type(key)
            kinds = [k.decode() for k in pipe.execute()]
            for key, kind in zip(chunk, kinds, strict=True):
                readers.get(kind, lambda pipe, key: pipe.exists(key))(pipe, key)
            contents = pipe.execute()
        for key, content in zip(chunk, contents, strict=True):
            name = key.decode("utf-8", "replace")
            yield name, key
            for value in _flatten(content):
                yield name, value
                with contextlib.suppress(zlib.error):
                    yield name, zlib.decompress(value)


def _flatten(content: object) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
    elif isinstance(content, dict):
        for field, value in content.items():
            yield from _flatten(field)
            yield from _flatten(value)
    elif isinstance(content, (list, tuple, set)):
        for item in content:
            yield from _flatten(item)


def leaked_claims(text: bytes | str, values: set[str]) -> list[str]:
    """The claim values found in ``text`` (as UTF-8, JSON-escaped or pickled)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    found = []
    for value in values:
        forms = {value.encode("utf-8"), json.dumps(value).strip('"').encode("ascii")}
        if any(form in data for form in forms):
            found.append(value)
    return found
