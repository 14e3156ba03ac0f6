"""``keys new|list``: make the RSA keys Kayle encrypts to, and show what is held."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from kayle_webhooks import keys as key_tools
from kayle_webhooks.cli import options
from kayle_webhooks.cli.root import root
from receiver.keyring import fingerprint, load_keyring, load_private_key
from receiver.settings import key_dir, read_settings


@root.group("keys")
def keys() -> None:
    """Create and list the RSA keys deliveries are encrypted to."""


@options.command(keys, "new")
@click.option("--kid", required=True, help="Key id to register at Kayle (the file stem).")
@options.bits
@options.key_dir
def new(kid: str, bits: int, directory: Path | None) -> None:
    """Generate <kid>.pem and print the body that registers it at Kayle."""
    settings = read_settings()
    path = key_tools.write_key(directory or key_dir(settings, "--dir"), kid, bits)
    public = load_private_key(path).public_key()
    body = key_tools.registration_body(kid, public)
    endpoint = settings.endpoint_id or "$KAYLE_ENDPOINT_ID"
    url = f"{settings.api_url.rstrip('/').removesuffix('/v1')}/v1/webhooks/endpoints/{endpoint}/keys"
    click.echo(f"wrote {path} ({bits}-bit RSA, mode 0600; keep it private and backed up)")
    click.echo(f"public key fingerprint (RFC 7638): {fingerprint(public)}")
    click.echo("\nregister its public half with Kayle; the body of POST /v1/webhooks/endpoints/{endpoint_id}/keys:")
    click.echo(json.dumps(body, indent=2))
    click.echo("\nready to run (needs KAYLE_API_KEY with the webhooks:write scope):")
    compact = json.dumps(body, separators=(",", ":"))
    click.echo(
        f'curl -sS -X POST "{url}" -H "Authorization: Bearer $KAYLE_API_KEY" '
        f"-H 'Content-Type: application/json' --data {shlex.quote(compact)}"
    )
    click.echo("\nKayle makes the new key active at once; keep older keys in the directory while retries may use them.")


@options.command(keys, "list")
@options.key_dir
def list_keys(directory: Path | None) -> None:
    """Show each key's kid, size and public-key fingerprint."""
    ring = load_keyring(directory or key_dir(read_settings(), "--dir"))
    click.echo(f"{'kid':<32} {'bits':>5}  fingerprint (RFC 7638 thumbprint of the public key)")
    for info in ring.infos():
        click.echo(f"{info.kid:<32} {info.bits:>5}  {info.fingerprint}")
    for warning, fix in ring.warnings:
        click.echo(f"WARNING: {warning}\n  fix: {fix}")
