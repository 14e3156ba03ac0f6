"""Exactly-once effects in the partner's own database: ``ctx.first_time(connection)``.

A handler that writes to its own SQL database inserts a mark, (event id, handler
name), in the same transaction as its write. The first run inserts it and goes
ahead; a rerun (the worker died after the commit, before the completion reached
Redis) finds it and skips the write. Effect and mark commit or roll back together.

Works with a ``sqlite3`` connection, a psycopg 3 connection, and a SQLAlchemy 2
``Session`` or ``Connection`` on SQLite or PostgreSQL. No driver is imported
here: a connection is recognised by the module its class comes from.

The table (:data:`TABLE`) is created on first use, in the caller's transaction;
:func:`ddl` gives the statement for creating it ahead. Marks are never deleted
by the service: :func:`purge` deletes old ones.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

TABLE = "kayle_applied_events"  # spelled out in the statements below

Dialect = Literal["sqlite", "postgresql"]

_DDL: dict[Dialect, str] = {
    # Unix seconds: SQLite has no timestamp type.
    "sqlite": """CREATE TABLE IF NOT EXISTS kayle_applied_events (
    event_id   TEXT NOT NULL,
    handler    TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (event_id, handler)
) WITHOUT ROWID""",
    "postgresql": """CREATE TABLE IF NOT EXISTS kayle_applied_events (
    event_id   TEXT NOT NULL,
    handler    TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
)""",
}

# Named parameters (``:name``), as sqlite3 and SQLAlchemy's text() take them; psycopg gets ``%(name)s``.
_MARK: dict[Dialect, str] = {
    "sqlite": "INSERT INTO kayle_applied_events (event_id, handler, applied_at) VALUES (:event_id, :handler, :now) "
    "ON CONFLICT (event_id, handler) DO NOTHING",
    "postgresql": "INSERT INTO kayle_applied_events (event_id, handler) VALUES (:event_id, :handler) "
    "ON CONFLICT (event_id, handler) DO NOTHING",
}
_PURGE: dict[Dialect, str] = {
    "sqlite": "DELETE FROM kayle_applied_events WHERE applied_at < :now - :seconds",
    "postgresql": "DELETE FROM kayle_applied_events WHERE applied_at < now() - make_interval(secs => :seconds)",
}
_PG_EXISTS = "SELECT to_regclass('kayle_applied_events') IS NOT NULL"
# Serializes first-use creation across concurrent transactions (two CREATE TABLE IF NOT EXISTS can both
# decide to create, and one then fails); held until the caller's transaction ends.
_PG_CREATE_LOCK = "SELECT pg_advisory_xact_lock(7431865027413)"


class DatabaseConnection(Protocol):
    """What :func:`first_time` accepts: a ``sqlite3.Connection``, a ``psycopg.Connection``, or a SQLAlchemy
    ``Session`` / ``Connection`` (on SQLite or PostgreSQL). Anything else raises ``TypeError``."""

    def execute(self, statement: Any, parameters: Any = ..., /) -> Any: ...


def ddl(dialect: str) -> str:
    """The ``CREATE TABLE IF NOT EXISTS`` statement of the marks table, for ``"sqlite"`` or ``"postgresql"``."""
    if dialect not in _DDL:
        raise ValueError(f"no marks table for {dialect!r}: use 'sqlite' or 'postgresql'")
    return _DDL[dialect]


def first_time(connection: DatabaseConnection, event_id: str, handler: str) -> bool:
    """Insert the mark (``event_id``, ``handler``) in ``connection``'s current transaction.

    ``True``: it is new, do the write (in the same transaction, then commit). ``False``: a committed run
    already applied it; skip the write. On PostgreSQL a concurrent transaction holding the same mark makes
    this wait for it to end. Raises ``RuntimeError`` if the connection is in autocommit mode outside a
    transaction: the mark would commit on its own, without the write.
    """
    db = _adapt(connection)
    _require_transaction(db.dbapi)
    params: dict[str, object] = {"event_id": event_id, "handler": handler}
    if db.dialect == "postgresql":
        _ensure_pg_table(db)
        return bool(db.execute(_MARK["postgresql"], params).rowcount == 1)
    params["now"] = time.time()
    try:
        return bool(db.execute(_MARK["sqlite"], params).rowcount == 1)
    except Exception as exc:
        if not _no_such_table(exc):
            raise
    # A failed statement leaves a SQLite transaction open and usable: create the table, then mark.
    db.execute(_DDL["sqlite"], {})
    return bool(db.execute(_MARK["sqlite"], params).rowcount == 1)


def purge(connection: DatabaseConnection, older_than_seconds: float) -> int:
    """Delete the marks older than ``older_than_seconds``, in the caller's transaction (commit it); returns how
    many. Keep marks as long as an event can still run again (see the README: "At least once")."""
    if older_than_seconds < 0:
        raise ValueError("older_than_seconds cannot be negative")
    db = _adapt(connection)
    params: dict[str, object] = {"seconds": float(older_than_seconds)}
    if db.dialect == "postgresql":
        if not _pg_table_exists(db):
            return 0
        return int(db.execute(_PURGE["postgresql"], params).rowcount)
    try:
        return int(db.execute(_PURGE["sqlite"], {**params, "now": time.time()}).rowcount)
    except Exception as exc:
        if _no_such_table(exc):
            return 0
        raise


@dataclass(frozen=True)
class _Adapted:
    dialect: Dialect
    execute: Callable[[str, dict[str, object]], Any]  # runs a statement with ``:name`` parameters
    dbapi: object  # the DBAPI connection underneath: for the transaction check and the table cache


def _adapt(connection: object) -> _Adapted:
    classes = type(connection).__mro__
    names = {f"{c.__module__}.{c.__qualname__}" for c in classes}
    if "sqlite3.Connection" in names:
        sqlite: Any = connection
        return _Adapted("sqlite", lambda sql, params: sqlite.execute(sql, params), sqlite)
    if "psycopg.Connection" in names:
        pg: Any = connection
        return _Adapted("postgresql", lambda sql, params: pg.execute(_pyformat(sql, params), params), pg)
    if any(c.__module__.split(".")[0] == "sqlalchemy" for c in classes):
        return _adapt_sqlalchemy(connection)
    raise TypeError(
        f"ctx.first_time() takes a sqlite3 or psycopg 3 connection, or a SQLAlchemy Session or Connection; "
        f"got {type(connection).__module__}.{type(connection).__qualname__}"
    )


def _adapt_sqlalchemy(obj: Any) -> _Adapted:
    from sqlalchemy import text

    # A Session's connection() joins (or begins) the session's transaction.
    conn: Any = obj.connection() if hasattr(obj, "get_bind") else obj
    dialect = conn.dialect.name
    if dialect not in _DDL:
        raise TypeError(f"ctx.first_time() supports SQLite and PostgreSQL; this SQLAlchemy dialect is {dialect!r}")
    return _Adapted(dialect, lambda sql, params: conn.execute(text(sql), params), conn.connection.dbapi_connection)


def _pyformat(sql: str, params: dict[str, object]) -> str:
    for name in params:
        sql = sql.replace(f":{name}", f"%({name})s")
    return sql


def _require_transaction(dbapi: object) -> None:
    """Refuse a connection whose next statement would commit on its own (known drivers only)."""
    root = type(dbapi).__module__.split(".")[0]
    conn: Any = dbapi
    if root == "sqlite3":
        # Legacy transaction control (Python 3.11, or 3.12's default autocommit=-1): an INSERT opens a
        # transaction unless isolation_level is None. With 3.12's autocommit=False one is always open.
        autocommit = getattr(conn, "autocommit", -1)
        if conn.in_transaction or autocommit is False or (autocommit == -1 and conn.isolation_level is not None):
            return
        fix = "open one first (connection.execute('BEGIN')) or connect without isolation_level=None"
    elif root == "psycopg":
        if not conn.autocommit or int(conn.info.transaction_status) == 2:  # 2: INTRANS
            return
        fix = "wrap the mark and the write in 'with connection.transaction():'"
    else:
        return
    raise RuntimeError(
        "ctx.first_time() needs a transaction: this connection is in autocommit mode, so the mark would be "
        f"committed without the handler's write; {fix}"
    )


# psycopg connections on which the table is known to exist (committed): checked once per connection.
_pg_ready: weakref.WeakSet[Any] = weakref.WeakSet()


def _ensure_pg_table(db: _Adapted) -> None:
    if db.dbapi in _pg_ready:
        return
    if _pg_table_exists(db):
        _pg_ready.add(db.dbapi)
        return
    # Created in the caller's transaction, so not cached: if it rolls back, the next call creates it again.
    db.execute(_PG_CREATE_LOCK, {})
    db.execute(_DDL["postgresql"], {})


def _pg_table_exists(db: _Adapted) -> bool:
    return bool(db.execute(_PG_EXISTS, {}).fetchone()[0])


def _no_such_table(exc: Exception) -> bool:
    return f"no such table: {TABLE}" in str(getattr(exc, "orig", None) or exc)
