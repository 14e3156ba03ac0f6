"""Helpers for the reliability suite: calling the ASGI app directly, sending like Kayle, the privacy sweep."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from receiver.sender import Delivery, sample_payload
from tests.support import free_port

PATH = "/webhooks/kayle"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call_asgi(
    app: ASGIApp, headers: Iterable[tuple[bytes, bytes]], chunks: list[bytes], pause: float = 0.0
) -> Answer:
    """One POST straight into the ASGI app (no HTTP client): ``chunks`` arrive one by one, ``pause`` apart.

    Any exception escaping the app is a crash and propagates to the test.
    """
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
        "headers": list(headers), "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }
    pending = list(chunks) or [b""]
    status: list[int] = []
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if pending:
            if pause:
                await asyncio.sleep(pause)
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await asyncio.sleep(3600)  # the client keeps the connection open and sends nothing more
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status[0], b"".join(body))


def header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def claims_of(payload: dict[str, Any]) -> set[str]:
    """Claim values distinctive enough to search for (the privacy sweep's needles)."""
    claims = payload.get("data", {}).get("claims") or {}
    return {value for value in claims.values() if isinstance(value, str) and len(value) >= 6}


def distinct_payload(event_type: str = "verification.session.succeeded") -> dict[str, Any]:
    return sample_payload(event_type)


def post(client: httpx.Client, url: str, delivery: Delivery) -> int:
    """One send as Kayle makes it; a refused connection or a timeout counts as status 0 (a failure)."""
    try:
        return client.post(url, content=delivery.body, headers=delivery.headers).status_code
    except httpx.HTTPError:
        return 0


@dataclass
class RedisServer:
    """A redis-server of the test's own (append-only, so a restart keeps the data), on a private port."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


@contextmanager
def own_redis(directory: Path) -> Iterator[RedisServer]:
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def subprocess_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAYLE_")}
    env.update(base)
    env.update(extra)
    return env
