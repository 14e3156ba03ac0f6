"""An open-loop HTTP/1.1 load client (wrk2-style constant rate) on raw asyncio streams.

Request ``i`` is due at ``start + i / rate`` whatever happened to earlier ones, and its latency is
measured from that due time to the last byte of the answer, so a stalled server is charged for
every request that should have gone out meanwhile (no coordinated omission). Keep-alive
connections are opened on demand and reused while they have been idle less than
:data:`MAX_IDLE_SECONDS` (uvicorn closes a keep-alive connection idle for 5 s; reusing one it
is closing would count as an error that is the client's own).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kayle_webhooks.testing import SignedRequest

MAX_IDLE_SECONDS = 4.0


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    late_starts: int = 0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.perf_counter()

    async def exchange(self, raw: bytes) -> int:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


def raw_request(delivery: SignedRequest, host: str, port: int, path: str) -> bytes:
    headers = {**delivery.headers, "Host": f"{host}:{port}", "Content-Length": str(len(delivery.body))}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("ascii") + delivery.body


async def run(host: str, port: int, requests: list[bytes], rate: float) -> Outcome:
    """Send ``requests`` at ``rate`` per second; return latencies and status counts."""
    idle: list[_Connection] = []
    outcome = Outcome()

    async def connect() -> _Connection:
        while idle:
            connection = idle.pop()
            if time.perf_counter() - connection.idle_since < MAX_IDLE_SECONDS:
                return connection
            connection.writer.close()
        return _Connection(*await asyncio.open_connection(host, port))

    async def one(raw: bytes, due: float) -> None:
        connection = await connect()
        try:
            status = await connection.exchange(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            outcome.errors += 1
            outcome.error_kinds[type(exc).__name__] = outcome.error_kinds.get(type(exc).__name__, 0) + 1
            connection.writer.close()
            return
        outcome.latencies_ms.append((time.perf_counter() - due) * 1000)
        outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
        connection.idle_since = time.perf_counter()
        idle.append(connection)

    start = time.perf_counter() + 0.05
    tasks = []
    for index, raw in enumerate(requests):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001:
            outcome.late_starts += 1
        tasks.append(asyncio.create_task(one(raw, due)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.writer.close()
    return outcome


async def closed_loop(host: str, port: int, requests: list[bytes], concurrency: int) -> Outcome:
    """Send every request exactly once from ``concurrency`` keep-alive connections, each waiting for its answer."""
    outcome = Outcome()
    pending = iter(requests)

    async def sender() -> None:
        connection = _Connection(*await asyncio.open_connection(host, port))
        for raw in pending:
            started = time.perf_counter()
            status = await connection.exchange(raw)
            outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
            outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
        connection.writer.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return outcome
