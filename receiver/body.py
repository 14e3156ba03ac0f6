"""Read a request body with the size cap enforced while reading, within a time limit."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from receiver.errors import BodyRejected

#: No answer reaches a client that has gone; the status is for the log line (nginx's "client closed request").
CLIENT_GONE_STATUS = 499


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """Return the body, or raise :class:`BodyRejected` (413 over ``limit``, 408 slower than ``timeout``,
    ``client_gone`` when the client disconnects first)."""
    too_large = BodyRejected("payload_too_large", f"the body exceeds the {limit}-byte limit", 413)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRejected("body_timeout", f"the body did not arrive within {timeout:g} s", 408) from None
    except ClientDisconnect:
        raise BodyRejected(
            "client_gone", "the client disconnected before sending the whole body", CLIENT_GONE_STATUS
        ) from None
    return b"".join(chunks)
