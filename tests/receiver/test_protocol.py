"""The front door of a real ``kayle-webhooks serve``, attacked from here: thousands of half-open connections,
a full connection cap, an oversized header. Kayle waits 15 s for an answer: a genuine delivery must get its
200 within that through every one of them."""

from __future__ import annotations

import resource
import select
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import PATIENCE, Receiver, serving
from tests.helpers.sending import PATH
from tests.helpers.vectors import Fixture

pytestmark = pytest.mark.slow

KAYLE_TIMEOUT = 15.0
HALF_OPEN = f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode()  # and never the blank line that ends the headers
#: Headers complete, the body still to come: a connection in a request, not waiting for headers.
IN_REQUEST = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Kayle-Signature: t=1,v1=00\r\n\r\n".encode()
ANY_SIGNATURE_AGE = {"KAYLE_TOLERANCE_SECONDS": str(10**10)}  # the vectors were signed long ago


@pytest.fixture
def many_files() -> Iterator[None]:
    """This test process may hold as many sockets as its hard limit allows."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before[1], before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def connect(receiver: Receiver, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
    sock.sendall(data)
    return sock


def deliver(receiver: Receiver, fixture: Fixture) -> tuple[int, float]:
    """A genuine delivery as Kayle sends it (15 s timeout, a new connection); its status and duration."""
    started = time.monotonic()
    headers = {**fixture.headers, "Connection": "close"}
    answer = httpx.post(receiver.url + PATH, content=fixture.body, headers=headers, timeout=KAYLE_TIMEOUT)
    return answer.status_code, time.monotonic() - started


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body), however many reads it takes to arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head = data.partition(b"\r\n\r\n")[0]
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:])
    while len(data) < len(head) + 4 + int(fields[b"content-length"]):
        data += sock.recv(65536) or b"\0" * len(data)  # closed early: stop, the caller's assertion says so
    return data


def count_closed(socks: list[socket.socket], deadline: float) -> int:
    """How many of ``socks`` the server has closed by ``deadline`` (or all of them, if sooner)."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while closed < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock.recv(65536):
                        continue
                except ConnectionResetError:
                    pass
                selector.unregister(sock)
                closed += 1
    return closed


def closed_connections(receiver: Receiver) -> dict[str, float]:
    text = httpx.get(receiver.admin_url + "/metrics", timeout=10).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kayle_connections_closed_total"
    }


def test_6000_half_open_connections_neither_hold_the_door_nor_delay_a_delivery(
    env: dict[str, str], fixtures: list[Fixture], tmp_path: Path, many_files: None
) -> None:
    # The defaults: headers within 10 s, at most 4096 connections per process.
    with serving(env, tmp_path / "serve.log", **ANY_SIGNATURE_AGE) as receiver:
        started = time.monotonic()
        attack = [connect(receiver, HALF_OPEN) for _ in range(6000)]
        opened = time.monotonic() - started
        try:
            status, took = deliver(receiver, fixtures[0])
            closed = count_closed(attack, deadline=started + KAYLE_TIMEOUT)
        finally:
            for sock in attack:
                sock.close()
        print(f"6000 half-open opened in {opened:.1f} s; delivery {status} in {took * 1000:.0f} ms; "
              f"{closed} closed by the server within {KAYLE_TIMEOUT:g} s of the attack starting")
        assert status == 200 and took < KAYLE_TIMEOUT
        assert closed >= 0.9 * len(attack)
        assert httpx.get(receiver.url + "/healthz", timeout=5).status_code == 200
        reasons = closed_connections(receiver)
        assert reasons["evicted_at_cap"] >= 6000 - 4096
        assert reasons["evicted_at_cap"] + reasons["header_timeout"] >= closed
        assert receiver.process.poll() is None


def test_at_the_cap_the_stalest_connection_without_headers_makes_room_else_a_newcomer_is_closed_at_once(
    env: dict[str, str], fixtures: list[Fixture], tmp_path: Path
) -> None:
    # A header timeout far beyond the deadlines below: a connection closed within them was closed at the cap.
    limits = {"KAYLE_MAX_CONNECTIONS": "20", "KAYLE_HEADER_TIMEOUT_SECONDS": "300"}
    with serving(env, tmp_path / "serve.log", **limits, **ANY_SIGNATURE_AGE) as receiver:
        waiting = [connect(receiver, HALF_OPEN) for _ in range(20)]
        status, _ = deliver(receiver, fixtures[0])
        assert status == 200
        assert closed_by_server(waiting[0], within=60)  # the stalest made room for the delivery
        busy = [connect(receiver, IN_REQUEST) for _ in range(20)]  # each takes the place of one waiting
        assert all(closed_by_server(sock, within=60) for sock in waiting[1:])

        started = time.monotonic()
        newcomer = connect(receiver, HALF_OPEN)
        assert closed_by_server(newcomer, within=60)  # at once, not after the header timeout
        refused_in = time.monotonic() - started
        assert not any(closed_by_server(sock, within=0.01) for sock in busy)  # requests in progress stay
        # The admin listener is outside the cap: probes and scrapes pass while the webhook port is full.
        assert httpx.get(receiver.admin_url + "/readyz", timeout=5).status_code == 200
        reasons = closed_connections(receiver)
        for sock in [*busy, newcomer, *waiting]:
            sock.close()
    print(f"a connection over a full cap was closed in {refused_in * 1000:.0f} ms")
    assert reasons["evicted_at_cap"] == 20 and reasons["refused_at_cap"] == 1


def test_a_1_mb_header_is_refused_at_16_kib_without_stalling_the_process(env: dict[str, str], tmp_path: Path) -> None:
    """The answer comes while the header is still being sent, 16 KiB at a time: the server never reads it whole."""
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Kayle-Signature: ".encode()
    request = head + b"a" * (1024 * 1024) + b"\r\n\r\n"
    with serving(env, tmp_path / "serve.log") as receiver:
        started = time.monotonic()
        answer, sent = b"", 0
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=PATIENCE) as sock:
            try:
                while sent < len(request) and not answer:
                    sock.sendall(request[sent : sent + 16384])
                    sent += 16384
                    ready, _, _ = select.select([sock], [], [], 0.05)
                    if ready:
                        answer = sock.recv(65536) or b"closed"
            except (BrokenPipeError, ConnectionResetError):
                answer = answer or b"closed"  # closed while we were still sending: refused too
        took = time.monotonic() - started
        probe = httpx.get(receiver.url + "/healthz", timeout=PATIENCE)
        print(f"a 1 MiB header was refused after {sent // 1024} KiB, in {took * 1000:.0f} ms, with {answer[:40]!r}")
        assert answer == b"closed" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert sent <= 256 * 1024, "the server read far more than 16 KiB of headers before refusing them"
        assert probe.status_code == 200
        assert closed_connections(receiver)["headers_too_large"] == 1
        assert receiver.process.poll() is None


def test_the_header_timeout_starts_again_for_the_next_request_on_a_kept_alive_connection(
    env: dict[str, str], tmp_path: Path
) -> None:
    with serving(env, tmp_path / "serve.log", KAYLE_HEADER_TIMEOUT_SECONDS="1") as receiver:
        fresh = connect(receiver, HALF_OPEN)
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next request, never finished
            # Closed by the header timeout; without its restart nothing would close it (this byte stops the
            # keep-alive timer), so a generous deadline still tells the two apart on a busy machine.
            assert closed_by_server(sock, within=60)
            took = time.monotonic() - started
        assert closed_by_server(fresh, within=60)
        fresh.close()
    assert took > 0.9
