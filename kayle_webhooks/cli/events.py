"""Events by hand: ``failed list|requeue``, ``forget`` and ``send-test``."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import click

from kayle_webhooks.cli import options
from kayle_webhooks.cli.root import PROG, root
from kayle_webhooks.errors import CommandError
from receiver.settings import Settings, read_settings

if TYPE_CHECKING:
    from redis import Redis


@root.group("failed")
def failed() -> None:
    """Inspect and requeue events whose handlers failed."""


@options.command(failed, "list")
@click.option("--wide", is_flag=True, help="Full event ids and every column, however wide.")
@click.option("--ids", is_flag=True, help="Only the failed events' ids, one per line.")
def list_failed(wide: bool, ids: bool) -> None:
    """List failed events: ids, types, failing handlers, error types."""
    from kayle_webhooks.failed import failed_events
    from kayle_webhooks.table import render

    settings = read_settings()
    events = failed_events(_redis(settings), settings.queue)
    if ids:
        for event in events:
            click.echo(event.event_id)
        return
    if not events:
        click.echo(f"no failed events on queue {settings.queue}")
        return
    header = ["EVENT ID", "TYPE", "FAILED AT (UTC)", "ATT", "FAILING HANDLERS", "ERROR"]
    rows = [
        [
            event.event_id,
            event.event_type,
            event.failed_at.strftime("%Y-%m-%d %H:%M") if event.failed_at else "?",
            str(event.attempts),
            ", ".join(event.handlers) or "-",
            ", ".join(event.errors),
        ]
        for event in events
    ]
    width = None if wide else max(100, min(shutil.get_terminal_size().columns, 160))
    for line in render(header, rows, width, shrink=(0, 1, 5, 4), keep_end=(4, 5)):  # --ids prints ids whole
        click.echo(line)
    click.echo(
        f"{len(events)} failed event(s); run '{PROG} failed requeue EVENT_ID' (a shortened id is shown with …: "
        "use --ids or --wide for whole ones) once the handler is fixed"
    )


@options.command(failed, "requeue")
@click.argument("event_ids", nargs=-1, metavar="[EVENT_ID]...")
@click.option("--all", "every", is_flag=True, help="Requeue every failed event.")
def requeue(event_ids: tuple[str, ...], every: bool) -> int:
    """Run failed events again (only the handlers that have not completed)."""
    from kayle_webhooks.failed import requeue as requeue_events

    if bool(event_ids) == every:
        raise click.UsageError("give EVENT_ID... or --all")
    settings = read_settings()
    done, missing = requeue_events(_redis(settings), settings.queue, None if every else list(event_ids))
    for event_id in done:
        click.echo(f"requeued {event_id}")
    for event_id in missing:
        click.echo(f"{event_id}: not in the failed registry", err=True)
    if every and not done:
        click.echo(f"nothing to requeue: no failed events on queue {settings.queue}")
    return 1 if missing else 0


@options.command(root, "forget")
@click.argument("event_ids", nargs=-1, required=True, metavar="EVENT_ID...")
def forget(event_ids: tuple[str, ...]) -> int:
    """Drop events' dedup markers and handler progress, so that a replay from Kayle is accepted again."""
    from kayle_webhooks.failed import Forgotten
    from kayle_webhooks.failed import forget as forget_event

    settings = read_settings()
    redis = _redis(settings)
    status = 0
    for event_id in event_ids:
        outcome = forget_event(redis, settings.dedup_ttl_seconds, event_id)
        if outcome is Forgotten.IN_FLIGHT:
            click.echo(f"{event_id}: still queued or running; not forgotten", err=True)
            status = 1
        elif outcome is Forgotten.UNKNOWN:
            click.echo(f"{event_id}: nothing to forget (no marker and no job: never accepted here, or already "
                       "forgotten or expired)", err=True)
            status = 1
        else:
            click.echo(f"forgot {event_id}: a replay from Kayle will be accepted and handled again")
    return status


@options.command(root, "send-test")
@click.option("--url", required=True, help="The receiver's URL, e.g. http://127.0.0.1:8000/webhooks/kayle.")
@click.option("--type", "event_type", default=None, help="Event type (default: one of each known type).")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Events per type.")
@click.option(
    "--repeat", type=click.IntRange(min=1), default=1, show_default=True,
    help="Send each event this many times, freshly signed, as Kayle's retries are (the copies answer duplicate).",
)
@click.option("--allow-unknown-type", is_flag=True, help="Send a --type that is not a known Kayle event type.")
def send_test(url: str, event_type: str | None, count: int, repeat: int, allow_unknown_type: bool) -> int:
    """Send real signed and encrypted deliveries, built as Kayle builds them, to a receiver."""
    from kayle_webhooks.keys import newest
    from kayle_webhooks.testing import send_samples
    from receiver.settings import load_config
    from workers.models import KNOWN_EVENT_TYPES, unknown_type_hint

    if event_type is not None and event_type not in KNOWN_EVENT_TYPES and not allow_unknown_type:
        raise CommandError(
            f"--type {event_type!r} is not a known Kayle event type ({unknown_type_hint(event_type)}); "
            "add --allow-unknown-type to send it anyway"
        )
    config = load_config()
    kid = newest(config.keyring)
    types = [event_type] if event_type else list(KNOWN_EVENT_TYPES)
    failures = 0
    for sent in send_samples(url, types, config.secrets[0], config.keyring[kid].public_key(), kid, count, repeat):
        failures += not sent.ok
        status = str(sent.status) if sent.status else "error"
        click.echo(f"{sent.event_type:<34} {status:<8} {sent.answer}")
    click.echo(f"sent with kid {kid}; {failures} failed" if failures else f"sent with kid {kid}; all accepted")
    return 1 if failures else 0


def _redis(settings: Settings) -> Redis:
    from receiver.connections import sync_redis

    return sync_redis(settings, socket_connect_timeout=3, socket_timeout=10)
