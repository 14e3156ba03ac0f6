"""The HTTP ceiling: a Starlette app that only reads the body and answers 200.

Nothing a receiver does can be faster than this on the same server stack.
Run: ``uvicorn bench.ceiling_app:app``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def webhook(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "accepted"})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/webhooks/kayle", webhook, methods=["POST"]), Route("/healthz", healthz)])
