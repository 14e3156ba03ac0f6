"""Handlers of the example plugin: one SQLite row per event (session id, type, outcome).

Registered through the entry point ``kayle_webhooks.handlers`` in this
package's ``pyproject.toml``. The store is ``$KAYLE_EXAMPLE_DB`` (default
``kayle-example.sqlite3`` in the worker's working directory).

What it shows:
- ``@on_any`` receives every event, known types as typed models and others as
  ``GenericEvent``; ``match`` on the model class picks the outcome.
- Exactly-once effects: delivery is at-least-once (a worker killed after the
  commit runs the handler again), so the row is written in the same transaction
  as ``ctx.first_time(connection)``'s mark; a rerun finds the mark and skips it.
- Privacy: it stores and logs ids, the type, the outcome and which claim keys were
  shared, never a claim value.
"""

from __future__ import annotations

import logging
import os
import sqlite3

from workers import (
    Context,
    Event,
    GenericEvent,
    SessionCancelled,
    SessionExpired,
    SessionFailed,
    SessionSucceeded,
    on_any,
)

DB_ENV = "KAYLE_EXAMPLE_DB"
DEFAULT_DB = "kayle-example.sqlite3"

logger = logging.getLogger("kayle_example_plugin")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT PRIMARY KEY,
    session_id  TEXT,
    type        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    claim_keys  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    attempt     INTEGER NOT NULL
)
"""

UPSERT = """
INSERT INTO events (event_id, session_id, type, outcome, claim_keys, received_at, attempt)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO UPDATE SET
    session_id = excluded.session_id, type = excluded.type, outcome = excluded.outcome,
    claim_keys = excluded.claim_keys, received_at = excluded.received_at, attempt = excluded.attempt
"""


def outcome_of(event: Event) -> str:
    """A short, claim-free summary of how the session ended."""
    match event:
        case SessionSucceeded():
            return "succeeded"
        case SessionFailed():
            return f"failed: {event.data.failure_code}"
        case SessionExpired():
            return "expired"
        case SessionCancelled():
            return f"cancelled: {event.data.reason}"
        case GenericEvent():
            return "unknown type"
    return "unknown type"


def claim_keys_of(event: Event) -> str:
    """Which claims were shared (their keys, never their values); declined ones may be absent or null."""
    if isinstance(event, SessionSucceeded):
        return ",".join(sorted(key for key, value in event.data.claims.items() if value is not None))
    return ""


def database_path() -> str:
    return os.environ.get(DB_ENV) or DEFAULT_DB


_connections: dict[tuple[int, str], sqlite3.Connection] = {}


def connect() -> sqlite3.Connection:
    """This process's connection to the store, opened on first use.

    One per process (a forked worker child opens its own); several processes
    may write at once, so writers wait up to 30 s for the lock.
    """
    key = (os.getpid(), database_path())
    if key not in _connections:
        connection = sqlite3.connect(key[1], timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SCHEMA)
        _connections[key] = connection
    return _connections[key]


@on_any
def record(event: Event, ctx: Context) -> None:
    """Write one row for the event, once: the row and the mark commit together before the handler returns."""
    row = (
        ctx.event_id,
        event.session_id,
        ctx.event_type,
        outcome_of(event),
        claim_keys_of(event),
        ctx.received_at.isoformat(),
        ctx.attempt,
    )
    with connect() as connection:  # one transaction: commits both, or rolls back both
        if not ctx.first_time(connection):
            logger.info("already recorded %s %s (attempt %d)", ctx.event_type, ctx.event_id, ctx.attempt)
            return
        # Still an upsert: an event replayed after its mark was purged overwrites its row instead of failing.
        connection.execute(UPSERT, row)
    logger.info("recorded %s %s (attempt %d)", ctx.event_type, ctx.event_id, ctx.attempt)
