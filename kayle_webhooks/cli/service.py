"""Running the service: ``serve``, ``worker``, ``check`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import click

from kayle_webhooks.cli import options
from kayle_webhooks.cli.root import root


@options.command(root, "serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the webhook listener.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port of the webhook listener.")
@click.option(
    "--admin-host", default=None, help="Address of the admin listener: /healthz, /readyz, /metrics [KAYLE_ADMIN_HOST]."
)
@click.option(
    "--admin-port", type=click.IntRange(1, 65535), default=None, help="Port of the admin listener [KAYLE_ADMIN_PORT]."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Receiver processes [KAYLE_RECEIVER_PROCESSES, else one per CPU this process may use].",
)
def serve(host: str, port: int, admin_host: str | None, admin_port: int | None, workers: int | None) -> None:
    """Run the receiver (HTTP) under uvicorn."""
    from receiver.server import serve as run_receiver

    run_receiver(host, port, workers, admin_host, admin_port)


@options.command(root, "worker")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--simple", is_flag=True, help="Run jobs in the worker process (RQ SimpleWorker), not in a fork.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; each runs one event at a time (README: Running workers).",
)
def worker(burst: bool, simple: bool, processes: int) -> None:
    """Run RQ workers that pass events to your handlers."""
    from workers.process import run

    run(burst=burst, simple=simple, processes=processes)


@options.command(root, "worker-alive")
def worker_alive() -> int:
    """Exit 0 when a worker on this host is registered and heartbeating in Redis (a liveness probe)."""
    import socket

    from receiver.connections import sync_redis
    from receiver.settings import read_settings
    from workers.process import live_workers_on

    settings = read_settings()
    client = sync_redis(settings, socket_connect_timeout=3, socket_timeout=5)
    host = socket.gethostname()
    alive = live_workers_on(host, client, settings.queue)
    if not alive:
        click.echo(f"no live worker of queue {settings.queue} on {host}", err=True)
        return 1
    click.echo(f"{len(alive)} live worker(s) of queue {settings.queue} on {host}")
    return 0


@options.command(root, "check")
def check() -> int:
    """Check configuration, keys, Redis, persistence and plugins; list every problem with its fix."""
    from kayle_webhooks.check import check as run_checks

    report = run_checks()
    click.echo("\n".join(report.lines))
    click.echo("ready" if report.ready else f"not ready: {report.problems} problem(s)")
    return 0 if report.ready else 1


@options.command(root, "demo")
@click.option("--port", type=int, default=8000, show_default=True, help="Receiver port.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the throwaway key and data go.",
)
def demo(port: int, directory: Path) -> None:
    """Run a local receiver and worker with a throwaway key, and send them real deliveries."""
    from kayle_webhooks.demo import run_demo

    run_demo(port, directory)
