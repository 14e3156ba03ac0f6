"""``kayle-webhooks serve``: the receiver under uvicorn."""

from __future__ import annotations

import os
import tempfile

import uvicorn

from receiver import logs
from receiver.settings import load_config


def serve(host: str, port: int, workers: int) -> None:
    config = load_config()  # fail here, once, with a one-line message, before uvicorn starts
    logs.configure(config.settings.log_format, config.settings.log_level)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several receiver processes: prometheus-client aggregates their counters through files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kayle-metrics-")
    uvicorn.run(
        "receiver.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
