"""``register``, ``rotate-key``, ``reconcile`` and ``status``: the service talks to Kayle's API itself.

Each command takes the parsed arguments and returns an exit status. The API key
(``KAYLE_API_KEY`` or ``KAYLE_API_KEY_FILE``) and the ``whsec_`` secret are
never printed; the secret only with ``register --show-secret``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import keyring
from receiver.jobs import marker_key
from receiver.kayle_api import Delivery, EncryptionKey, Endpoint, KayleApi, KayleApiError
from receiver.settings import ConfigError, Settings, read_settings

ALL_EVENT_TYPES = (
    "verification.session.succeeded",
    "verification.session.failed",
    "verification.session.expired",
    "verification.session.cancelled",
)
DOTENV = Path(".env")
#: Kayle's automatic retries after the first failed send: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
RETRY_WINDOW = dt.timedelta(hours=32, minutes=35)
EXIT_LOST = 3  # reconcile: some events can no longer be delivered by Kayle
_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    key_dir = _key_dir(settings)
    with _client(settings) as api:
        return _guarded(lambda: _register(api, settings, key_dir, args))


def rotate_key_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    key_dir, endpoint_id = _key_dir(settings), _endpoint_id(settings)
    with _client(settings) as api:
        return _guarded(lambda: _rotate(api, endpoint_id, key_dir, args))


def reconcile_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    endpoint_id, since = _endpoint_id(settings), parse_duration(args.since)
    with _client(settings) as api:
        return _guarded(lambda: _reconcile(api, settings, endpoint_id, since, args.dry_run))


def status_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    endpoint_id = _endpoint_id(settings)
    with _client(settings) as api:
        return _guarded(lambda: _status(api, settings, endpoint_id))


# -- configuration --------------------------------------------------------------------------------


def api_key(settings: Settings) -> str:
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip()
    if settings.api_key_file is not None:
        try:
            key = settings.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"KAYLE_API_KEY_FILE: cannot read {settings.api_key_file} ({exc.strerror})") from None
        if key:
            return key
        raise ConfigError(f"KAYLE_API_KEY_FILE: {settings.api_key_file} is empty")
    raise ConfigError(
        "KAYLE_API_KEY: not set; create an API key (kk_...) with the webhooks:read and webhooks:write scopes "
        "in Kayle's dashboard and set it (or KAYLE_API_KEY_FILE)"
    )


def _client(settings: Settings) -> KayleApi:
    return KayleApi(api_key(settings), settings.api_url)


def _key_dir(settings: Settings) -> Path:
    if settings.key_dir is None:
        raise ConfigError("KAYLE_KEY_DIR: not set; point it at the directory for the <kid>.pem private keys")
    return settings.key_dir


def _endpoint_id(settings: Settings) -> str:
    if not settings.endpoint_id:
        raise ConfigError("KAYLE_ENDPOINT_ID: not set; run `kayle-webhooks register --url PUBLIC_URL` first")
    return settings.endpoint_id


def _guarded(run: Callable[[], int]) -> int:
    """Run a command body; a Kayle API error or a key-file problem becomes one line on stderr and status 1."""
    try:
        status = run()
    except KayleApiError as error:
        print(f"kayle-webhooks: {error}", file=sys.stderr)
        return 1
    except keyring.KeyFileError as error:
        print(f"kayle-webhooks: KAYLE_KEY_DIR: {error}", file=sys.stderr)
        return 1
    return status


def parse_duration(text: str) -> dt.timedelta:
    """``90m``, ``36h``, ``7d``, ``2w`` or ``3600s``; raise :class:`ConfigError` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--since: {text!r} is not a duration such as 36h, 7d or 2w")
    return dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])


# -- register -------------------------------------------------------------------------------------


def _register(api: KayleApi, settings: Settings, key_dir: Path, args: argparse.Namespace) -> int:
    wanted = _event_types(args.events)
    endpoint = next((e for e in api.endpoints() if e.url == args.url), None)
    secret: str | None = None
    if endpoint is None:
        created = api.create_endpoint(args.url, args.name, wanted)
        endpoint, secret = created.endpoint, created.signing_secret.get_secret_value()
        print(f"endpoint {endpoint.id}: created for {endpoint.url}")
    else:
        print(f"endpoint {endpoint.id}: already registered for {endpoint.url}")
        if args.events is not None and sorted(endpoint.subscribed_event_types) != sorted(wanted):
            endpoint = api.update_endpoint(endpoint.id, subscribed_event_types=wanted)
            print(f"  subscriptions updated: {', '.join(endpoint.subscribed_event_types)}")
        current = api.reveal_signing_secret(endpoint.id).get_secret_value()
        secret = None if current in _configured_secrets(settings) else current
    if not endpoint.enabled:
        print("  WARNING: the endpoint is disabled at Kayle; enable it in the dashboard to receive deliveries")
    _register_key(api, endpoint, key_dir, args)
    if secret is not None:
        _save_secret(settings, secret, args.show_secret)
    else:
        print("signing secret: already configured here")
    _save_endpoint_id(endpoint.id)
    print("next: (re)start `kayle-webhooks serve` and `kayle-webhooks worker`, then `kayle-webhooks status`")
    return 0


def _event_types(events: str | None) -> list[str]:
    if events is None:
        return list(ALL_EVENT_TYPES)
    types = [t.strip() for t in events.split(",") if t.strip()]
    if not types:
        raise ConfigError("--events: name at least one event type, e.g. verification.session.succeeded")
    return types


def _register_key(api: KayleApi, endpoint: Endpoint, key_dir: Path, args: argparse.Namespace) -> None:
    kid, private = _local_key(key_dir, args.kid, args.bits)
    registered = {k.key_id: k for k in api.keys(endpoint.id)}
    found = registered.get(kid)
    if found is None:
        api.create_key(endpoint.id, kid, keyring.public_jwk(private.public_key(), kid))
        print(f"key {kid}: registered at Kayle; deliveries are now encrypted to it")
    elif not _same_key(found, private):
        raise keyring.KeyFileError(
            f"{kid}: Kayle holds a different public key under this kid; choose another with --kid"
        )
    elif not found.is_active:
        api.reactivate_key(found.id)
        print(f"key {kid}: was registered but inactive; reactivated")
    else:
        print(f"key {kid}: already registered and active")


def _local_key(key_dir: Path, kid: str | None, bits: int) -> tuple[str, rsa.RSAPrivateKey]:
    """The key to register: ``kid`` if held (else made), or the newest held, or a new one."""
    held = _held_keys(key_dir)
    if kid is None and held:
        newest = max(held.describe(), key=lambda info: info.path.stat().st_mtime)
        print(f"key {newest.kid}: using the newest key in {key_dir}")
        return newest.kid, held[newest.kid]
    if kid is not None and kid in held:
        return kid, held[kid]
    kid = kid or new_kid()
    path = keyring.write_key(key_dir, kid, bits)
    print(f"key {kid}: generated {path} (RSA {bits}, mode 0600)")
    return kid, keyring.load_private_key(path)


def _held_keys(key_dir: Path) -> keyring.Keyring:
    if not key_dir.is_dir() or not any(p.suffix in keyring.KEY_SUFFIXES for p in key_dir.iterdir()):
        return keyring.Keyring({})
    return keyring.load_keyring(key_dir)


def _same_key(registered: EncryptionKey, private: rsa.RSAPrivateKey) -> bool:
    ours = keyring.public_jwk(private.public_key(), registered.key_id)
    return registered.jwk.get("n") == ours["n"] and registered.jwk.get("e") == ours["e"]


def new_kid() -> str:
    return f"kayle-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(3)}"


# -- where the secret and the endpoint id go ----------------------------------------------------


def _configured_secrets(settings: Settings) -> list[str]:
    try:
        return settings.secrets()
    except ConfigError:
        return []


def _save_secret(settings: Settings, secret: str, show: bool) -> None:
    if settings.signing_secrets_file is not None:
        _append_line(settings.signing_secrets_file, secret)
        print(f"signing secret: appended to {settings.signing_secrets_file} (KAYLE_SIGNING_SECRETS_FILE)")
    else:
        current = [s.strip() for s in (_dotenv_value("KAYLE_SIGNING_SECRETS") or "").split(",") if s.strip()]
        if secret not in current:
            _set_dotenv("KAYLE_SIGNING_SECRETS", ",".join([*current, secret]))
        print(f"signing secret: written to {DOTENV.resolve()} (KAYLE_SIGNING_SECRETS)")
        _warn_if_overridden("KAYLE_SIGNING_SECRETS")
    if show:
        print(f"signing secret: {secret}")


def _save_endpoint_id(endpoint_id: str) -> None:
    if _dotenv_value("KAYLE_ENDPOINT_ID") == endpoint_id:
        print(f"KAYLE_ENDPOINT_ID: already saved in {DOTENV.resolve()}")
        return
    _set_dotenv("KAYLE_ENDPOINT_ID", endpoint_id)
    print(f"KAYLE_ENDPOINT_ID={endpoint_id}: saved in {DOTENV.resolve()}")
    _warn_if_overridden("KAYLE_ENDPOINT_ID")


def _warn_if_overridden(name: str) -> None:
    if name in os.environ:
        print(f"  NOTE: {name} is also set in the environment, which wins over .env: update it there too")


def _append_line(path: Path, line: str) -> None:
    existing = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if line in (item.strip() for item in existing):
        return
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8") as file:
        separator = "\n" if existing and not path.read_text(encoding="utf-8").endswith("\n") else ""
        file.write(f"{separator}{line}\n")
    path.chmod(0o600)


def _dotenv_line(name: str) -> re.Pattern[str]:
    return re.compile(rf"\s*(?:export\s+)?{re.escape(name)}\s*=(.*)")


def _dotenv_value(name: str) -> str | None:
    if not DOTENV.exists():
        return None
    for line in DOTENV.read_text(encoding="utf-8").splitlines():
        match = _dotenv_line(name).fullmatch(line)
        if match:
            return match[1].strip().strip("'\"")
    return None


def _set_dotenv(name: str, value: str) -> None:
    """Set ``name=value`` in ./.env, keeping every other line; the file holds secrets, so mode 0600."""
    lines = DOTENV.read_text(encoding="utf-8").splitlines() if DOTENV.exists() else []
    kept = [line for line in lines if not _dotenv_line(name).fullmatch(line)]
    temporary = DOTENV.with_name(f".env.{os.getpid()}.tmp")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
        file.write("\n".join([*kept, f"{name}={value}"]) + "\n")
    os.replace(temporary, DOTENV)


# -- rotate-key -----------------------------------------------------------------------------------


def _rotate(api: KayleApi, endpoint_id: str, key_dir: Path, args: argparse.Namespace) -> int:
    endpoint = api.endpoint(endpoint_id)
    registered = list(api.keys(endpoint_id))
    kid = args.kid or new_kid()
    if any(k.key_id == kid for k in registered):
        print(f"kayle-webhooks: key {kid} is already registered at Kayle; choose a new --kid", file=sys.stderr)
        return 1
    held = _held_keys(key_dir)
    pre_deployed = kid in held
    if pre_deployed:
        private = held[kid]
        print(f"key {kid}: using the existing {key_dir}/{kid}.pem")
    else:
        path = keyring.write_key(key_dir, kid, args.bits)
        private = keyring.load_private_key(path)
        print(f"key {kid}: generated {path} (RSA {args.bits}, mode 0600)")
    api.create_key(endpoint_id, kid, keyring.public_jwk(private.public_key(), kid))
    print(f"key {kid}: registered at Kayle and now active; new deliveries are encrypted to it")
    if not pre_deployed:
        print(
            "  restart the receivers and workers now so they load it: until then, deliveries encrypted to it are "
            "refused and Kayle retries them (nothing is lost)"
        )
    _advise_on_old_keys([k for k in registered if k.is_active], held, endpoint, key_dir)
    return 0


def _advise_on_old_keys(
    previous: list[EncryptionKey], held: keyring.Keyring, endpoint: Endpoint, key_dir: Path
) -> None:
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


# -- reconcile ------------------------------------------------------------------------------------


@dataclass
class Reconciliation:
    already_accepted: list[Delivery] = field(default_factory=list)
    retried: list[Delivery] = field(default_factory=list)
    expired: list[Delivery] = field(default_factory=list)
    in_progress: list[Delivery] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # event id -> verification session id


def _reconcile(api: KayleApi, settings: Settings, endpoint_id: str, since: dt.timedelta, dry_run: bool) -> int:
    cutoff = dt.datetime.now(dt.UTC) - since
    failed = [d for d in api.deliveries(endpoint_id, status="failed") if _created_after(d, cutoff)]
    latest = _one_per_event(failed)
    accepted = _accepted_here(settings, [d.event_id for d in latest])
    if accepted is None:
        return 1
    result = Reconciliation()
    for delivery in latest:
        if delivery.event_id in accepted:
            result.already_accepted.append(delivery)
        elif delivery.payload_scrubbed_at is not None:
            result.expired.append(delivery)
        elif dry_run:
            result.retried.append(delivery)
        else:
            _retry(api, delivery, result)
    for delivery in result.expired:
        result.sessions[delivery.event_id] = _session_of(api, delivery.event_id)
    _report(result, len(failed), cutoff, dry_run)
    return EXIT_LOST if result.expired else 0


def _created_after(delivery: Delivery, cutoff: dt.datetime) -> bool:
    try:
        created = dt.datetime.fromisoformat(delivery.created_at.replace("Z", "+00:00"))
    except ValueError:
        return True  # when in doubt, look at it
    return (created if created.tzinfo else created.replace(tzinfo=dt.UTC)) >= cutoff


def _one_per_event(deliveries: Iterable[Delivery]) -> list[Delivery]:
    """One event can have failed several times here (replays): one retry per event is enough."""
    latest: dict[str, Delivery] = {}
    for delivery in sorted(deliveries, key=lambda d: d.created_at):
        latest[delivery.event_id] = delivery
    return list(latest.values())


def _accepted_here(settings: Settings, event_ids: list[str]) -> set[str] | None:
    """Events whose dedup marker is in Redis; None (and a message) when Redis cannot be asked."""
    if not event_ids:
        return set()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
    try:
        pipe = client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.exists(marker_key(event_id))
        found = pipe.execute()
    except redis.RedisError as exc:
        print(
            f"kayle-webhooks: cannot read dedup markers from Redis (KAYLE_REDIS_URL: {type(exc).__name__}); "
            "reconcile needs them to skip events already accepted, so nothing was retried",
            file=sys.stderr,
        )
        return None
    finally:
        client.close()
    return {event_id for event_id, exists in zip(event_ids, found, strict=True) if exists}


def _retry(api: KayleApi, delivery: Delivery, result: Reconciliation) -> None:
    try:
        api.retry_delivery(delivery.id)
    except KayleApiError as error:
        if error.status == 409 and error.code == "WEBHOOK_PAYLOAD_EXPIRED":
            result.expired.append(delivery)
        elif error.status == 409:
            result.in_progress.append(delivery)
        else:
            raise
    else:
        result.retried.append(delivery)


def _session_of(api: KayleApi, event_id: str) -> str:
    try:
        event = api.event(event_id)
    except KayleApiError as error:
        return f"unknown ({error.code})"
    return event.trigger_id


def _report(result: Reconciliation, failed: int, cutoff: dt.datetime, dry_run: bool) -> None:
    events = len(result.already_accepted) + len(result.retried) + len(result.expired) + len(result.in_progress)
    print(f"{failed} failed deliveries at Kayle since {cutoff:%Y-%m-%d %H:%M} UTC, for {events} events")
    for delivery in result.already_accepted:
        print(f"already accepted here, skipped: {delivery.event_id} ({delivery.id})")
    verb = "would retry" if dry_run else "retry requested"
    for delivery in result.retried:
        print(f"{verb}: {delivery.event_id} ({delivery.id})")
    for delivery in result.in_progress:
        print(f"already being resent by Kayle: {delivery.event_id} ({delivery.id})")
    for delivery in result.expired:
        print(
            f"LOST at Kayle (payload no longer retained): {delivery.event_id}, "
            f"session {result.sessions[delivery.event_id]}"
        )
    print(
        f"summary: {len(result.already_accepted)} already accepted, {len(result.retried)} "
        f"{'to retry' if dry_run else 'retried'}, {len(result.in_progress)} in progress, {len(result.expired)} lost"
    )
    if result.expired:
        print("look the lost sessions up through Kayle's sessions API (GET /v1/sessions/{id})")


# -- status ---------------------------------------------------------------------------------------


def _status(api: KayleApi, settings: Settings, endpoint_id: str) -> int:
    endpoint = api.endpoint(endpoint_id)
    problems: list[str] = []
    print(f"endpoint {endpoint.id}: {endpoint.url}")
    print(f"  enabled: {'yes' if endpoint.enabled else 'NO'}")
    if not endpoint.enabled:
        problems.append("the endpoint is disabled at Kayle")
    print(f"  subscribed: {', '.join(endpoint.subscribed_event_types) or '(nothing)'}")
    print(f"  failed payloads kept: {endpoint.undelivered_payload_retention_hours} h")
    problems += _key_status(list(api.keys(endpoint_id)), settings)
    counts = {s: sum(1 for _ in api.deliveries(endpoint_id, status=s)) for s in ("pending", "failed")}
    print(f"deliveries: {counts['pending']} pending, {counts['failed']} failed")
    if counts["failed"]:
        print("  run `kayle-webhooks reconcile` to have the failed ones sent again")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def _key_status(registered: list[EncryptionKey], settings: Settings) -> list[str]:
    try:
        held = _held_keys(_key_dir(settings))
    except (ConfigError, keyring.KeyFileError) as error:
        return [f"the keys held here cannot be read: {error}"]
    active = [k for k in registered if k.is_active]
    for key in registered:
        state = "active" if key.is_active else "inactive"
        here = "held here" if key.key_id in held and _same_key(key, held[key.key_id]) else "NOT held here"
        print(f"key {key.key_id}: {state} at Kayle, {here}")
    for kid in sorted(set(held) - {k.key_id for k in registered}):
        print(f"key {kid}: held here, not registered at Kayle")
    if not active:
        return ["no active key at Kayle: deliveries cannot be encrypted (run `kayle-webhooks register`)"]
    if not all(k.key_id in held and _same_key(k, held[k.key_id]) for k in active):
        return [f"the active key {active[0].key_id} is not held here: every delivery will be refused"]
    return []
