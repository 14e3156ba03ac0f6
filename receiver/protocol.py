"""The receiver's HTTP/1.1 connections: uvicorn's httptools protocol with the limits it lacks.

- Request headers must be complete within ``KAYLE_HEADER_TIMEOUT_SECONDS`` of the connection opening
  (or of the first byte of the next request on a kept-alive connection), or the connection is closed.
- Request headers above 16 KiB are answered 431 and the connection closed, before httptools buffers them.
- A process holds at most ``KAYLE_MAX_CONNECTIONS`` open on the webhook port (admin connections are not
  counted); a connection arriving at the cap takes the place of the one that has waited longest for its
  headers, or is closed at once when none is waiting (docs/design.md: The front door).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from receiver import metrics
from receiver.logs import log

MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_SECONDS = 5
_CAP_WARNING_EVERY = 60.0
_TOO_LARGE_BODY = b'{"error":{"code":"headers_too_large","message":"the request headers exceed 16384 bytes"}}'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)

logger = logging.getLogger("kayle.receiver")


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_connections: int
    #: Connections to this local port (the admin listener's) are not counted: probes pass during an attack.
    uncapped_port: int | None = None


class Door:
    """One process's connections: how many are open, and which are waiting for headers, longest first.

    Handed to every connection of a process (it is copied into each receiver process as it starts).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.waiting: OrderedDict[FrontDoorProtocol, None] = OrderedDict()
        self._warned_at = -_CAP_WARNING_EVERY

    def enter(self) -> bool:
        """Count a new connection in, closing the stalest one waiting for headers at the cap; False: no room."""
        if self.open >= self.limits.max_connections:
            self._warn_at_cap()
            if not self.waiting:
                return False
            next(iter(self.waiting)).close_for("evicted_at_cap")
        self.open += 1
        return True

    def leave(self, connection: FrontDoorProtocol) -> None:
        self.open -= 1
        self.waiting.pop(connection, None)

    def _warn_at_cap(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _CAP_WARNING_EVERY:
            self._warned_at = now
            log(
                logger,
                logging.WARNING,
                "connection cap reached: closing the connections that wait longest for their headers",
                max_connections=self.limits.max_connections,
            )


class FrontDoorProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        door: Door,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.door = door
        self._counted = False
        self._reading_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.server is None or self.server[1] != self.door.limits.uncapped_port:
            if not self.door.enter():
                metrics.connection_closed("refused_at_cap")
                transport.close()
                return
            self._counted = True
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Header bytes are counted before httptools sees them; whatever follows the headers passes as it came.
        while data and self._reading_headers:
            room = MAX_HEADER_BYTES - self._header_bytes
            if room <= 0:
                self.transport.write(_TOO_LARGE)
                self.close_for("headers_too_large")
                return
            self._await_headers()
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._stop_waiting()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Whatever this connection sends next is the next request's headers.
        self._reading_headers = True
        self._header_bytes = 0

    def close_for(self, reason: metrics.ClosedReason) -> None:
        metrics.connection_closed(reason)
        self._leave()
        self.transport.close()

    def _await_headers(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.door.limits.header_timeout, self._headers_too_slow)
            if self._counted:
                self.door.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
            self.door.waiting.pop(self, None)

    def _headers_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.close_for("header_timeout")

    def _leave(self) -> None:
        self._stop_waiting()
        if self._counted:
            self._counted = False
            self.door.leave(self)
