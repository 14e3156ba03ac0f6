"""``kayle-webhooks serve``: the receiver under uvicorn."""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from receiver import logs
from receiver.settings import load_config


def serve(args: argparse.Namespace) -> int:
    config = load_config()  # fail here, once, with a one-line message, before uvicorn starts
    logs.configure(config.settings.log_format, config.settings.log_level)
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several receiver processes: prometheus-client aggregates their counters through files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kayle-metrics-")
    uvicorn.run(
        "receiver.app:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    return 0
