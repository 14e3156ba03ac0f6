"""``register`` and ``rotate-key``: set this service up at Kayle and rotate its encryption key.

The API key and the ``whsec_`` secret are never printed (the secret only with ``--show-secret``);
what Kayle answers is checked before anything of it is written to a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from kayle_webhooks import envfile, keys
from kayle_webhooks.errors import CommandError, KayleApiError
from kayle_webhooks.kayle_api import EncryptionKey, Endpoint, KayleApi
from receiver.keyring import Keyring, load_private_key
from receiver.settings import ConfigError, Settings, signing_secrets
from workers.models import KNOWN_EVENT_TYPES

#: Kayle's automatic retries after the first failed send: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
RETRY_WINDOW = dt.timedelta(hours=32, minutes=35)
#: What a signing secret from Kayle may look like before it is written to a file.
SECRET_FORMAT = re.compile(r"whsec_[A-Za-z0-9_-]{8,256}")
ID_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,200}")
SECRETS_FILE = "KAYLE_SIGNING_SECRETS_FILE"


@dataclass(frozen=True)
class Registration:
    url: str
    name: str | None
    events: list[str] | None  # None: every known type (and no change to an existing endpoint's)
    kid: str | None
    bits: int
    show_secret: bool


def register(api: KayleApi, settings: Settings, key_dir: Path, wanted: Registration) -> None:
    envfile.check_writable(envfile.DOTENV)  # before Kayle is asked anything: no half-done registration
    if settings.signing_secrets_file is not None:
        envfile.check_writable(settings.signing_secrets_file, SECRETS_FILE)
    types = wanted.events or list(KNOWN_EVENT_TYPES)
    endpoint = next((e for e in api.endpoints() if e.url == wanted.url), None)
    secret: str | None = None
    # Each answer is checked as it arrives: before it is printed, used, or written anywhere.
    if endpoint is None:
        created = api.create_endpoint(wanted.url, wanted.name, types)
        endpoint, secret = created.endpoint, created.signing_secret.get_secret_value()
        _check_answer(endpoint.id, secret)
        print(f"endpoint {endpoint.id}: created for {endpoint.url}")
    else:
        _check_answer(endpoint.id, None)
        print(f"endpoint {endpoint.id}: already registered for {endpoint.url}")
        if wanted.events is not None and sorted(endpoint.subscribed_event_types) != sorted(types):
            endpoint = api.update_endpoint(endpoint.id, subscribed_event_types=types)
            print(f"  subscriptions updated: {', '.join(endpoint.subscribed_event_types)}")
        current = api.reveal_signing_secret(endpoint.id).get_secret_value()
        _check_answer(endpoint.id, current)
        secret = None if current in _configured_secrets(settings) else current
    if not endpoint.enabled:
        print("  WARNING: the endpoint is disabled at Kayle; enable it in the dashboard to receive deliveries")
    _register_key(api, endpoint, key_dir, wanted.kid, wanted.bits)
    if secret is not None:
        _save_secret(settings, secret, wanted.show_secret)
    else:
        print("signing secret: already configured here")
    _save_endpoint_id(endpoint.id)
    print("next: (re)start `kayle-webhooks serve` and `kayle-webhooks worker`, then `kayle-webhooks status`")


def rotate_key(api: KayleApi, endpoint_id: str, key_dir: Path, kid: str | None, bits: int) -> None:
    endpoint = api.endpoint(endpoint_id)
    registered = list(api.keys(endpoint_id))
    kid = kid or new_kid()
    if any(k.key_id == kid for k in registered):
        raise CommandError(f"key {kid} is already registered at Kayle; choose a new --kid")
    held = keys.held(key_dir)
    pre_deployed = kid in held
    if pre_deployed:
        private = held[kid]
        print(f"key {kid}: using the existing {key_dir}/{kid}.pem")
    else:
        private = _new_key(key_dir, kid, bits)
    api.create_key(endpoint_id, keys.registration_body(kid, private.public_key()))
    print(f"key {kid}: registered at Kayle and now active; new deliveries are encrypted to it")
    if not pre_deployed:
        print(
            "  restart the receivers and workers now so they load it: until then, deliveries encrypted to it are "
            "refused and Kayle retries them (nothing is lost)"
        )
    _advise_on_old_keys([k for k in registered if k.is_active], held, endpoint, key_dir)


def new_kid() -> str:
    return f"kayle-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(3)}"


def same_key(registered: EncryptionKey, private: rsa.RSAPrivateKey) -> bool:
    ours = keys.public_jwk(private.public_key(), registered.key_id)
    return registered.jwk.get("n") == ours["n"] and registered.jwk.get("e") == ours["e"]


def _check_answer(endpoint_id: str, secret: str | None) -> None:
    """Refuse an answer that would write anything but an id and a Kayle secret into the operator's files."""
    if not ID_FORMAT.fullmatch(endpoint_id):
        raise KayleApiError(
            200,
            "INVALID_RESPONSE",
            "Kayle answered with an endpoint id that is not 1-200 of [A-Za-z0-9_-]; nothing was written",
            "check KAYLE_API_URL: it must be Kayle's API",
        )
    if secret is not None and not SECRET_FORMAT.fullmatch(secret):
        raise KayleApiError(
            200,
            "INVALID_RESPONSE",
            "Kayle answered with a signing secret that is not whsec_ followed by 8-256 URL-safe characters; "
            "nothing was written",
            "check KAYLE_API_URL: it must be Kayle's API",
        )


def _register_key(api: KayleApi, endpoint: Endpoint, key_dir: Path, kid: str | None, bits: int) -> None:
    kid, private = _local_key(key_dir, kid, bits)
    found = {k.key_id: k for k in api.keys(endpoint.id)}.get(kid)
    if found is None:
        api.create_key(endpoint.id, keys.registration_body(kid, private.public_key()))
        print(f"key {kid}: registered at Kayle; deliveries are now encrypted to it")
    elif not same_key(found, private):
        raise CommandError(f"key {kid}: Kayle holds a different public key under this kid; choose another with --kid")
    elif not found.is_active:
        api.reactivate_key(found.id)
        print(f"key {kid}: was registered but inactive; reactivated")
    else:
        print(f"key {kid}: already registered and active")


def _local_key(key_dir: Path, kid: str | None, bits: int) -> tuple[str, rsa.RSAPrivateKey]:
    """The key to register: ``kid`` if held (else made), or the newest held, or a new one."""
    held = keys.held(key_dir)
    if kid is None and len(held):
        newest = keys.newest(held)
        print(f"key {newest}: using the newest key in {key_dir}")
        return newest, held[newest]
    if kid is not None and kid in held:
        return kid, held[kid]
    kid = kid or new_kid()
    return kid, _new_key(key_dir, kid, bits)


def _new_key(key_dir: Path, kid: str, bits: int) -> rsa.RSAPrivateKey:
    path = keys.write_key(key_dir, kid, bits)
    print(f"key {kid}: generated {path} (RSA {bits}, mode 0600)")
    return load_private_key(path)


def _configured_secrets(settings: Settings) -> list[str]:
    try:
        return signing_secrets(settings)
    except ConfigError:
        return []


def _save_secret(settings: Settings, secret: str, show: bool) -> None:
    if settings.signing_secrets_file is not None:
        previous = envfile.append_line(settings.signing_secrets_file, secret, SECRETS_FILE)
        print(f"signing secret: appended to {settings.signing_secrets_file} ({SECRETS_FILE}){_mode_note(previous)}")
    else:
        current = [s.strip() for s in (envfile.dotenv_value("KAYLE_SIGNING_SECRETS") or "").split(",") if s.strip()]
        wanted = current if secret in current else [*current, secret]
        previous = envfile.set_dotenv("KAYLE_SIGNING_SECRETS", ",".join(wanted))
        print(f"signing secret: written to {envfile.DOTENV.resolve()} (KAYLE_SIGNING_SECRETS){_mode_note(previous)}")
        _warn_if_overridden("KAYLE_SIGNING_SECRETS")
    if show:
        print(f"signing secret: {secret}")


def _save_endpoint_id(endpoint_id: str) -> None:
    if envfile.dotenv_value("KAYLE_ENDPOINT_ID") == endpoint_id:
        print(f"KAYLE_ENDPOINT_ID: already saved in {envfile.DOTENV.resolve()}")
        return
    previous = envfile.set_dotenv("KAYLE_ENDPOINT_ID", endpoint_id)
    print(f"KAYLE_ENDPOINT_ID={endpoint_id}: saved in {envfile.DOTENV.resolve()}{_mode_note(previous)}")
    _warn_if_overridden("KAYLE_ENDPOINT_ID")


def _mode_note(previous: int | None) -> str:
    if previous is None or previous == envfile.PRIVATE:
        return ""
    return f" (mode {previous:04o} -> {envfile.PRIVATE:04o}: it holds a secret)"


def _warn_if_overridden(name: str) -> None:
    if name in os.environ:
        print(f"  NOTE: {name} is also set in the environment, which wins over .env: update it there too")


def _advise_on_old_keys(previous: list[EncryptionKey], held: Keyring, endpoint: Endpoint, key_dir: Path) -> None:
    retention = dt.timedelta(hours=endpoint.undelivered_payload_retention_hours)
    keep_until = dt.datetime.now(dt.UTC) + RETRY_WINDOW + retention
    for key in previous:
        where = f"{key_dir}/{key.key_id}.pem" if key.key_id in held else f"{key.key_id} (NOT held in {key_dir}!)"
        print(
            f"old key {key.key_id}: now inactive at Kayle. Keep {where} until {keep_until:%Y-%m-%d %H:%M} UTC: "
            f"retries and replays of deliveries made before now are still encrypted to it (Kayle retries for "
            f"about 32.6 h, then keeps failed payloads {endpoint.undelivered_payload_retention_hours} h). "
            "After that, delete it and restart."
        )
