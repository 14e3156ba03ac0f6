"""The admin listener (``KAYLE_ADMIN_HOST``:``KAYLE_ADMIN_PORT``): ``/healthz``, ``/readyz`` and ``/metrics``,
kept off the webhook port; and the app that sends each request to the webhook or the admin app by the
listener it arrived on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from receiver import metrics
from receiver.connections import async_redis
from receiver.persistence import eviction_finding, read_eviction_policy_async
from receiver.settings import Config


async def healthz(request: Request) -> Response:
    """The process runs (served on both listeners, for probes that only reach the webhook port)."""
    return JSONResponse({"status": "ok"})


def create_admin_app(config: Config) -> Starlette:
    # A Redis pool of its own: a scrape never waits for, nor holds, a connection a delivery needs.
    redis = async_redis(config.settings)
    queue = config.settings.queue

    async def readyz(request: Request) -> Response:
        try:
            await redis.ping()
            policy = await read_eviction_policy_async(redis)
        except (RedisError, OSError):
            return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
        finding = eviction_finding(policy)
        if finding is not None and finding.loses:  # its start-up log and `check` say why and what to do
            return JSONResponse({"status": "unavailable", "redis": "may_evict", "maxmemory_policy": policy}, 503)
        return JSONResponse({"status": "ready", "keys": len(config.keyring)})

    async def metrics_endpoint(request: Request) -> Response:
        # Always 200: while Redis is down the receiver's own series (its 503s among them) still matter.
        return Response(await metrics.render(redis, queue), media_type=metrics.CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False
    return app


class ByListener:
    """One ASGI app for both listeners: a request goes to ``admin`` when it arrived on ``admin_port``
    (the ASGI ``server`` is the accepting socket's own address), to ``webhook`` otherwise."""

    def __init__(self, webhook: Starlette, admin: Starlette, admin_port: int) -> None:
        self.webhook = webhook
        self.admin = admin
        self.admin_port = admin_port

        @contextlib.asynccontextmanager
        async def both(app: Starlette) -> AsyncIterator[None]:
            async with webhook.router.lifespan_context(webhook), admin.router.lifespan_context(admin):
                yield

        self._lifespan = Starlette(lifespan=both)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        server = scope.get("server")
        app = self.admin if server is not None and server[1] == self.admin_port else self.webhook
        await app(scope, receive, send)
