"""Handlers for the exactly-once proof: each inserts one effect row per event into a real database.

``marked_a`` and ``marked_b`` write their row in ``ctx.first_time``'s transaction (table ``effects_marked``);
``plain_a`` and ``plain_b`` write theirs without a mark (table ``effects_plain``), as handlers without the API
would. The test creates both tables, without a unique constraint: only the mark can keep a row from being
written twice. Switches, read at call time:

- ``KAYLE_TEST_EFFECT_DB``: a SQLite file path, or a ``postgresql://`` URL;
- ``KAYLE_TEST_DIE_AFTER_COMMIT``: comma-separated event ids; the first time each handler's transaction
  commits for one of them, the work horse SIGKILLs itself right there, before its completion is recorded;
- ``KAYLE_TEST_DIE_BEFORE_COMMIT``: the same, once the row is written but before the transaction commits;
- ``KAYLE_TEST_DIED_DIR``: one file per (kill point, event, handler) that died so, which makes it happen once;
- ``KAYLE_TEST_FORKS``: a file to which every process forked by the worker (work horses among them)
  appends its pid as it starts, so that the test can kill horses at random moments of their lives.

Rows hold ids, handler names, attempts and pids only. Only worker processes import this module
(``KAYLE_HANDLERS``): importing it registers its handlers in the process-wide registry, so test modules
must not.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from workers import BaseEvent, Context, on_any

try:  # imported once by the worker, not by every work horse it forks
    import psycopg
except ImportError:  # the SQLite run needs no psycopg
    psycopg = None  # type: ignore[assignment]

_connections: dict[int, Any] = {}


def _announce_fork() -> None:
    descriptor = os.open(os.environ["KAYLE_TEST_FORKS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{os.getpid()}\n".encode())
    finally:
        os.close(descriptor)


if os.environ.get("KAYLE_TEST_FORKS"):
    os.register_at_fork(after_in_child=_announce_fork)


def _connection() -> Any:
    """This process's connection (a forked work horse opens its own)."""
    if os.getpid() not in _connections:
        target = os.environ["KAYLE_TEST_EFFECT_DB"]
        if target.startswith("postgresql://"):
            _connections[os.getpid()] = psycopg.connect(target, autocommit=True)
        else:
            connection = sqlite3.connect(target, timeout=60)
            # WAL: committed transactions survive the death of the process (not of the machine) at once.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            _connections[os.getpid()] = connection
    return _connections[os.getpid()]


def _apply(name: str, ctx: Context, marked: bool) -> None:
    connection = _connection()
    row = (ctx.event_id, name, ctx.attempt, os.getpid())
    insert = f"INSERT INTO effects_{'marked' if marked else 'plain'} VALUES (?, ?, ?, ?)"
    if isinstance(connection, sqlite3.Connection):
        with connection:  # one transaction: commits at the end of the block
            if not marked or ctx.first_time(connection):
                connection.execute(insert, row)
            _die_once_if_chosen("before", ctx.event_id, name)
    else:
        with connection.transaction():
            if not marked or ctx.first_time(connection):
                connection.execute(insert.replace("?", "%s"), row)
            _die_once_if_chosen("before", ctx.event_id, name)
    _die_once_if_chosen("after", ctx.event_id, name)


def _die_once_if_chosen(point: str, event_id: str, name: str) -> None:
    if event_id not in os.environ.get(f"KAYLE_TEST_DIE_{point.upper()}_COMMIT", "").split(","):
        return
    try:
        (Path(os.environ["KAYLE_TEST_DIED_DIR"]) / f"{point}.{event_id}.{name}").touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


@on_any
def marked_a(event: BaseEvent, ctx: Context) -> None:
    _apply("marked_a", ctx, marked=True)


@on_any
def plain_a(event: BaseEvent, ctx: Context) -> None:
    _apply("plain_a", ctx, marked=False)


@on_any
def marked_b(event: BaseEvent, ctx: Context) -> None:
    _apply("marked_b", ctx, marked=True)


@on_any
def plain_b(event: BaseEvent, ctx: Context) -> None:
    _apply("plain_b", ctx, marked=False)
