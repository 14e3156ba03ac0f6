"""This service's account at Kayle: ``register``, ``rotate-key``, ``reconcile`` and ``status``."""

from __future__ import annotations

import click

from kayle_webhooks.cli import options
from kayle_webhooks.cli.root import root
from receiver.settings import ConfigError, Settings, key_dir, read_settings


@options.command(root, "register")
@click.option("--url", required=True, help="The public URL Kayle will deliver to.")
@click.option("--name", default=None, help="Endpoint name at Kayle.")
@click.option("--events", default=None, help="Comma-separated event types (default: every known type).")
@click.option("--kid", default=None, help="Key id to register (default: the newest key held, or a new one).")
@click.option("--show-secret", is_flag=True, help="Also print the whsec_ secret.")
@options.bits
def register(url: str, name: str | None, events: str | None, kid: str | None, show_secret: bool, bits: int) -> None:
    """Register this service with Kayle: endpoint, encryption key and signing secret."""
    from kayle_webhooks.account import Registration
    from kayle_webhooks.account import register as register_here
    from kayle_webhooks.kayle_api import connect

    types = None if events is None else [t.strip() for t in events.split(",") if t.strip()]
    if types == []:
        raise ConfigError("--events: name at least one event type, e.g. verification.session.succeeded")
    settings = read_settings()
    wanted = Registration(url, name, types, kid, bits, show_secret)
    directory = key_dir(settings)
    with connect(settings) as api:
        register_here(api, settings, directory, wanted)


@options.command(root, "rotate-key")
@click.option("--kid", default=None, help="Key id of the new key (default: generated; a held, new key is used).")
@options.bits
def rotate_key(kid: str | None, bits: int) -> None:
    """Generate and register a new key; keep the old one for retries."""
    from kayle_webhooks.account import rotate_key as rotate
    from kayle_webhooks.kayle_api import connect

    settings = read_settings()
    directory, endpoint_id = key_dir(settings), _endpoint_id(settings)
    with connect(settings) as api:
        rotate(api, endpoint_id, directory, kid, bits)


@options.command(root, "reconcile")
@click.option("--since", default="9d", show_default=True, help="Look back this far, e.g. 36h or 7d.")
@click.option("--dry-run", is_flag=True, help="Report what would be retried; change nothing.")
def reconcile(since: str, dry_run: bool) -> int:
    """Ask Kayle to retry failed deliveries of events not accepted here."""
    from kayle_webhooks.kayle_api import connect
    from kayle_webhooks.reconcile import parse_duration
    from kayle_webhooks.reconcile import reconcile as run_reconcile

    settings = read_settings()
    endpoint_id, window = _endpoint_id(settings), parse_duration(since)
    with connect(settings) as api:
        return run_reconcile(api, settings, endpoint_id, window, dry_run)


@options.command(root, "status")
def status() -> int:
    """Show the endpoint as Kayle sees it, and whether the keys it uses are held here."""
    from kayle_webhooks.kayle_api import connect
    from kayle_webhooks.reconcile import status as show_status

    settings = read_settings()
    endpoint_id = _endpoint_id(settings)
    with connect(settings) as api:
        return show_status(api, settings, endpoint_id)


def _endpoint_id(settings: Settings) -> str:
    if not settings.endpoint_id:
        raise ConfigError("KAYLE_ENDPOINT_ID: not set; run `kayle-webhooks register --url PUBLIC_URL` first")
    return settings.endpoint_id
