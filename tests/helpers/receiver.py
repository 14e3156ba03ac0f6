"""The receiver app in this process: an HTTP client for it, and raw ASGI calls for hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from receiver.settings import Config, load_config
from tests.helpers.sending import PATH
from tests.helpers.vectors import FIXTURE_TIME, Fixture

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


@contextlib.asynccontextmanager
async def receiver_client(config: Config | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The receiver app (configured from the environment unless given), its clock at the vectors' timestamp."""
    from receiver.app import create_app

    app = create_app(config or load_config(), clock=lambda: float(FIXTURE_TIME))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def admin_client(config: Config | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The admin app (``/healthz``, ``/readyz``, ``/metrics``) in this process."""
    from receiver.admin import create_admin_app

    app = create_admin_app(config or load_config())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as http:
        yield http


async def post_all(fixtures: Iterable[Fixture]) -> list[str]:
    """Deliver vectors through the receiver app; return each answer's status."""
    outcomes = []
    async with receiver_client() as client:
        for fixture in fixtures:
            response = await client.post(PATH, content=fixture.body, headers=fixture.headers)
            assert response.status_code == 200, response.text
            outcomes.append(str(response.json()["status"]))
    return outcomes


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
