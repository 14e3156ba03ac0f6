"""``kayle-webhooks serve``: the receiver under uvicorn, on two listeners (webhook and admin), in one or more
processes, behind the front door of :mod:`receiver.protocol`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
from functools import partial
from typing import cast

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from receiver import error_reports, logs, tracing
from receiver.admin import ByListener, create_admin_app
from receiver.app import create_app
from receiver.logs import log
from receiver.machine import connection_cap, default_decrypt_threads, raise_file_limit, usable_cpus
from receiver.protocol import KEEP_ALIVE_SECONDS, Door, FrontDoorProtocol, Limits
from receiver.settings import ConfigError, load_config

logger = logging.getLogger("kayle.receiver")


def serve(host: str, port: int, processes: int | None, admin_host: str | None, admin_port: int | None) -> None:
    config = load_config()  # fail here, once, with a one-line message, before uvicorn starts
    settings = config.settings
    logs.configure(settings.log_format, settings.log_level)
    error_reports.setup(settings, "receiver")  # a DSN without sentry-sdk: fail here, once
    admin_host = admin_host or settings.admin_host
    admin_port = settings.admin_port if admin_port is None else admin_port
    if admin_port == port:
        raise ConfigError(
            f"KAYLE_ADMIN_PORT: {admin_port} is also the webhook port (--port); give the admin listener its own port"
        )
    cpus = usable_cpus()
    processes = processes or settings.receiver_processes or cpus
    files = raise_file_limit()
    limits = Limits(settings.header_timeout_seconds, connection_cap(settings.max_connections, files), admin_port)
    sockets = [_listen(host, port, "--port"), _listen(admin_host, admin_port, "KAYLE_ADMIN_PORT")]

    threads = settings.decrypt_threads
    if "decrypt_threads" not in settings.model_fields_set:
        threads = default_decrypt_threads(processes, cpus)
    # Every receiver process reads its configuration from the environment (app_from_environment).
    os.environ["KAYLE_ADMIN_PORT"] = str(admin_port)
    os.environ["KAYLE_DECRYPT_THREADS"] = str(threads)
    if processes > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several receiver processes: prometheus-client aggregates their counters through files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kayle-metrics-")
    log(
        logger,
        logging.INFO,
        "receiver listening",
        webhook=f"http://{_address(host, port)}{settings.path}",
        admin=f"http://{_address(admin_host, admin_port)}",
        processes=processes,
        cpus=cpus,
        decrypt_threads=threads,
        max_connections=limits.max_connections,
        open_file_limit=files,
        header_timeout_seconds=limits.header_timeout,
    )
    uvicorn_config = uvicorn.Config(
        "receiver.server:app_from_environment",
        factory=True,
        # One Door per process: the partial (and its Door) is copied into each process uvicorn starts.
        http=cast("type[asyncio.Protocol]", partial(FrontDoorProtocol, door=Door(limits))),
        ws="none",  # no WebSocket upgrades: an upgraded connection would leave the front door's count
        workers=processes,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=20,
    )
    if processes > 1:
        Multiprocess(uvicorn_config, sockets=sockets).run()
        return
    server = uvicorn.Server(uvicorn_config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has stopped the server
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def app_from_environment() -> ByListener:
    """The factory ``uvicorn --factory`` calls in each receiver process."""
    config = load_config()
    logs.configure(config.settings.log_format, config.settings.log_level)
    # Here, in each receiver process (uvicorn spawns them): a client made before would not be inherited.
    tracing.setup("kayle-webhooks-receiver")
    error_reports.setup(config.settings, "receiver")
    return ByListener(create_app(config), create_admin_app(config), config.settings.admin_port)


def _listen(host: str, port: int, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{name}: cannot listen on {_address(host, port)} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
