"""``reconcile`` and ``status``: what Kayle failed to deliver here, and how the endpoint looks from Kayle's side."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from kayle_webhooks import keys
from kayle_webhooks.account import same_key
from kayle_webhooks.errors import KayleApiError
from kayle_webhooks.kayle_api import DeliveryRecord, EncryptionKey, KayleApi
from receiver import dedup
from receiver.connections import sync_redis
from receiver.keyring import KeyFileError
from receiver.settings import ConfigError, Settings, key_dir

EXIT_LOST = 3  # reconcile: some events can no longer be delivered by Kayle
_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``90m``, ``36h``, ``7d``, ``2w`` or ``3600s``; raise :class:`ConfigError` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--since: {text!r} is not a duration such as 36h, 7d or 2w")
    return dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])


@dataclass
class Reconciliation:
    already_accepted: list[DeliveryRecord] = field(default_factory=list)
    retried: list[DeliveryRecord] = field(default_factory=list)
    expired: list[DeliveryRecord] = field(default_factory=list)
    in_progress: list[DeliveryRecord] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # event id -> verification session id


def reconcile(api: KayleApi, settings: Settings, endpoint_id: str, since: dt.timedelta, dry_run: bool) -> int:
    """Ask Kayle to retry the failed deliveries of events not accepted here; the exit status."""
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


def status(api: KayleApi, settings: Settings, endpoint_id: str) -> int:
    """Print the endpoint, its keys against the ones held here, and its backlog; 1 when something is wrong."""
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


def _created_after(delivery: DeliveryRecord, cutoff: dt.datetime) -> bool:
    try:
        created = dt.datetime.fromisoformat(delivery.created_at.replace("Z", "+00:00"))
    except ValueError:
        return True  # when in doubt, look at it
    return (created if created.tzinfo else created.replace(tzinfo=dt.UTC)) >= cutoff


def _one_per_event(deliveries: Iterable[DeliveryRecord]) -> list[DeliveryRecord]:
    """One event can have failed several times here (replays): one retry per event is enough."""
    latest: dict[str, DeliveryRecord] = {}
    for delivery in sorted(deliveries, key=lambda d: d.created_at):
        latest[delivery.event_id] = delivery
    return list(latest.values())


def _accepted_here(settings: Settings, event_ids: list[str]) -> set[str] | None:
    """Events whose dedup marker is in Redis; None (and a message) when Redis cannot be asked."""
    if not event_ids:
        return set()
    client = sync_redis(settings, socket_timeout=5, socket_connect_timeout=3)
    try:
        return dedup.seen(client, settings.dedup_ttl_seconds, event_ids)
    except RedisError as exc:
        print(
            f"kayle-webhooks: cannot read dedup markers from Redis (KAYLE_REDIS_URL: {type(exc).__name__}); "
            "reconcile needs them to skip events already accepted, so nothing was retried",
            file=sys.stderr,
        )
        return None
    finally:
        client.close()


def _retry(api: KayleApi, delivery: DeliveryRecord, result: Reconciliation) -> None:
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


def _key_status(registered: list[EncryptionKey], settings: Settings) -> list[str]:
    try:
        held = keys.held(key_dir(settings))
    except (ConfigError, KeyFileError) as error:
        return [f"the keys held here cannot be read: {error}"]
    active = [k for k in registered if k.is_active]
    for key in registered:
        state = "active" if key.is_active else "inactive"
        here = "held here" if key.key_id in held and same_key(key, held[key.key_id]) else "NOT held here"
        print(f"key {key.key_id}: {state} at Kayle, {here}")
    for kid in sorted(set(held) - {k.key_id for k in registered}):
        print(f"key {kid}: held here, not registered at Kayle")
    if not active:
        return ["no active key at Kayle: deliveries cannot be encrypted (run `kayle-webhooks register`)"]
    if not all(k.key_id in held and same_key(k, held[k.key_id]) for k in active):
        return [f"the active key {active[0].key_id} is not held here: every delivery will be refused"]
    return []
