"""``ctx.first_time(connection)`` on real databases: sqlite3 files, psycopg 3 and SQLAlchemy 2 on a private
PostgreSQL server (tests.postgres) and on SQLite. In process, no workers (the proof with real worker
processes being killed is tests/reliability/test_effects_exactly_once.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from kayle_webhooks.failed import Forgotten, forget
from receiver.keyring import load_keyring
from receiver.settings import read_settings
from tests.helpers.receiver import post_all
from tests.helpers.vectors import Fixture
from tests.helpers.workers import configure_in_process, drain, failed_ids, set_worker_env
from workers import Context, dispatch
from workers.effects import TABLE, ddl, purge
from workers.registry import Registry, handler_name

EFFECTS = "CREATE TABLE effects (event_id TEXT NOT NULL, handler TEXT NOT NULL)"


def context(event_id: str = "evt_1", handler: str = "app.handlers.book") -> Context:
    return Context(event_id, "verification.session.succeeded", None, "kid", datetime.now(UTC), 1, handler)


@dataclass
class Database:
    """One way of reaching one database: how to connect, run a transaction, write an effect, read back."""

    kind: str
    dialect: str
    connect: Callable[[], AbstractContextManager[Any]]
    transaction: Callable[[Any], AbstractContextManager[None]]
    run: Callable[[Any, str, dict[str, object]], Any]  # a statement with :named parameters

    def write(self, connection: Any, ctx: Context) -> None:
        self.run(connection, "INSERT INTO effects VALUES (:e, :h)", {"e": ctx.event_id, "h": ctx.handler})

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows as committed, read on a connection of its own."""
        with self.connect() as connection, self.transaction(connection):
            return [tuple(row) for row in self.run(connection, sql, {}).fetchall()]

    def has_marks_table(self) -> bool:
        if self.dialect == "sqlite":
            return bool(self.query(f"SELECT 1 FROM sqlite_master WHERE name = '{TABLE}'"))
        return bool(self.query(f"SELECT to_regclass('{TABLE}') IS NOT NULL")[0][0])

    def marks(self) -> list[tuple[str, str]]:
        if not self.has_marks_table():
            return []
        return sorted((e, h) for e, h in self.query(f"SELECT event_id, handler FROM {TABLE}"))

    def effects(self) -> list[tuple[str, str]]:
        return sorted((e, h) for e, h in self.query("SELECT event_id, handler FROM effects"))


@contextmanager
def commit_or_rollback(connection: Any) -> Iterator[None]:
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def sqlite3_database(path: Path) -> Database:
    def connect() -> AbstractContextManager[sqlite3.Connection]:
        return closing(sqlite3.connect(path, timeout=30))

    return Database("sqlite3", "sqlite", connect, commit_or_rollback, lambda c, sql, p: c.execute(sql, p))


def psycopg_database(dsn: str) -> Database:
    def run(connection: psycopg.Connection[Any], sql: str, params: dict[str, object]) -> Any:
        for name in params:
            sql = sql.replace(f":{name}", f"%({name})s")
        return connection.execute(sql, params)

    return Database("psycopg", "postgresql", lambda: psycopg.connect(dsn), commit_or_rollback, run)


def sqlalchemy_database(url: str, dialect: str) -> Database:
    engine = create_engine(url)

    def transaction(session: Session) -> AbstractContextManager[None]:
        return session.begin()  # type: ignore[return-value]

    return Database(
        f"sqlalchemy-{dialect}", dialect, lambda: Session(engine), transaction,
        lambda s, sql, p: s.execute(text(sql), p),
    )


@pytest.fixture(params=["sqlite3", "psycopg", "sqlalchemy-sqlite", "sqlalchemy-postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty database with the handler's own table, ``effects``, and no marks table yet."""
    kind = request.param
    path = tmp_path / "app.sqlite3"
    if kind == "sqlite3":
        database = sqlite3_database(path)
    elif kind == "sqlalchemy-sqlite":
        database = sqlalchemy_database(f"sqlite:///{path}", "sqlite")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        database = psycopg_database(dsn) if kind == "psycopg" else sqlalchemy_database(
            dsn.replace("postgresql://", "postgresql+psycopg://"), "postgresql")
    with database.connect() as connection, database.transaction(connection):
        database.run(connection, EFFECTS, {})
    return database


def test_the_first_run_applies_and_a_later_run_finds_the_mark_and_skips(db: Database) -> None:
    ctx = context()
    assert not db.has_marks_table()
    with db.connect() as connection, db.transaction(connection):
        assert ctx.first_time(connection) is True
        db.write(connection, ctx)
    assert db.marks() == [("evt_1", "app.handlers.book")]  # the table was created on first use

    with db.connect() as connection, db.transaction(connection):  # a rerun, on a connection of its own
        assert ctx.first_time(connection) is False
    with db.connect() as connection, db.transaction(connection):  # the same connection twice
        assert context("evt_2").first_time(connection) is True
        assert context("evt_2").first_time(connection) is False
        assert context("evt_1", "app.handlers.audit").first_time(connection) is True  # marks are per handler
    assert db.effects() == [("evt_1", "app.handlers.book")]
    assert db.marks() == [("evt_1", "app.handlers.audit"), ("evt_1", "app.handlers.book"),
                          ("evt_2", "app.handlers.book")]


def test_a_rolled_back_run_leaves_neither_effect_nor_mark_and_the_rerun_applies(db: Database) -> None:
    with db.connect() as connection:  # one connection throughout, as a long-lived worker keeps it
        for event_id in ("evt_first_use", "evt_later"):  # once when the run also created the table, once after
            ctx = context(event_id)
            with pytest.raises(ZeroDivisionError), db.transaction(connection):
                assert ctx.first_time(connection) is True
                db.write(connection, ctx)
                _ = 1 / 0  # the handler fails after its write: nothing of this run may stay
            assert (event_id, ctx.handler) not in db.marks()
            assert db.effects() == ([("evt_first_use", ctx.handler)] if event_id == "evt_later" else [])

            with db.transaction(connection):
                assert ctx.first_time(connection) is True
                db.write(connection, ctx)
    assert db.effects() == [("evt_first_use", "app.handlers.book"), ("evt_later", "app.handlers.book")]


def test_purge_deletes_only_marks_older_than_asked(db: Database) -> None:
    with db.connect() as connection, db.transaction(connection):
        assert purge(connection, 3600) == 0  # no table yet: nothing to do
        for event_id in ("evt_old", "evt_new"):
            assert context(event_id).first_time(connection)
    age = "applied_at - 7200" if db.dialect == "sqlite" else "applied_at - interval '2 hours'"
    with db.connect() as connection, db.transaction(connection):
        db.run(connection, f"UPDATE {TABLE} SET applied_at = {age} WHERE event_id = 'evt_old'", {})

    with db.connect() as connection, db.transaction(connection):
        assert purge(connection, older_than_seconds=3600) == 1
    assert db.marks() == [("evt_new", "app.handlers.book")]
    with db.connect() as connection, db.transaction(connection):
        assert context("evt_old").first_time(connection) is True  # purged: it would apply again
        assert context("evt_new").first_time(connection) is False
    with pytest.raises(ValueError):
        purge(connection, -1)


def test_the_published_ddl_creates_the_table_ahead(db: Database) -> None:
    with db.connect() as connection, db.transaction(connection):
        db.run(connection, ddl(db.dialect), {})
    assert db.has_marks_table() and db.marks() == []
    with db.connect() as connection, db.transaction(connection):
        assert context().first_time(connection) is True
        assert context().first_time(connection) is False
    with pytest.raises(ValueError, match="sqlite"):
        ddl("mysql")


def test_first_time_outside_a_handler_raises_and_writes_nothing(tmp_path: Path) -> None:
    db = sqlite3_database(tmp_path / "app.sqlite3")
    with db.connect() as connection, pytest.raises(RuntimeError, match="handler"):
        context(handler="").first_time(connection)
    assert not db.has_marks_table()


def test_an_autocommit_connection_is_refused_unless_a_transaction_is_open(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Outside a transaction the mark would commit alone, before the write: refused, and nothing is stored."""
    with closing(sqlite3.connect(tmp_path / "app.sqlite3", isolation_level=None)) as lite:
        with pytest.raises(RuntimeError, match="autocommit"):
            context().first_time(lite)
        lite.execute("BEGIN")
        assert context().first_time(lite) is True
        lite.execute("COMMIT")
    with psycopg.connect(postgres_dsn, autocommit=True) as pg:
        with pytest.raises(RuntimeError, match="autocommit"):
            context().first_time(pg)
        assert not pg.execute(f"SELECT to_regclass('{TABLE}')").fetchone()[0]  # type: ignore[index]
        with pg.transaction():
            assert context().first_time(pg) is True
    engine = create_engine(postgres_dsn.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with Session(engine) as session, pytest.raises(RuntimeError, match="autocommit"):
        context("evt_2").first_time(session)
    with psycopg.connect(postgres_dsn) as pg:
        assert pg.execute(f"SELECT event_id FROM {TABLE}").fetchall() == [("evt_1",)]


def test_an_unsupported_object_is_refused(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "app.sqlite3")) as connection, pytest.raises(TypeError, match="Cursor"):
        context().first_time(connection.cursor())  # type: ignore[arg-type]


@pytest.mark.parametrize("table_exists", [True, False], ids=["table-exists", "first-use"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_two_concurrent_runs_on_postgres_apply_the_effect_once(
    postgres_dsn: str, table_exists: bool, outcome: str
) -> None:
    """Two transactions mark the same (event, handler) at once: the second waits for the first; if the first
    commits, the second gets False; if it rolls back, the second gets True. Also on first use of the table."""
    ctx = context()
    with psycopg.connect(postgres_dsn) as setup:
        setup.execute(EFFECTS)
        if table_exists:
            setup.execute(ddl("postgresql"))
    with psycopg.connect(postgres_dsn) as first, psycopg.connect(postgres_dsn) as second:
        assert ctx.first_time(first) is True
        first.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.event_id, ctx.handler))
        answers: list[bool] = []

        def rerun() -> None:
            with second.transaction():
                if ctx.first_time(second):
                    second.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.event_id, ctx.handler))
                    answers.append(True)
                else:
                    answers.append(False)

        thread = threading.Thread(target=rerun)
        thread.start()
        wait_until_waiting_on_a_lock(first, second.info.backend_pid)
        assert not answers
        if outcome == "commit":
            first.commit()
        else:
            first.rollback()
        thread.join(timeout=120)
        assert answers == [outcome == "rollback"]
        effects = first.execute("SELECT event_id, handler FROM effects").fetchall()
    assert effects == [(ctx.event_id, ctx.handler)]


def wait_until_waiting_on_a_lock(observer: psycopg.Connection[Any], pid: int, timeout: float = 120) -> None:
    """Until the backend ``pid`` waits on a lock (read with an autocommit-free connection of the test's own)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(observer.info.dsn, autocommit=True) as watcher:
        while True:
            row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the second transaction never waited for the first")
            time.sleep(0.02)


@pytest.mark.anyio
async def test_each_handler_gets_its_own_name_and_a_replay_after_forget_applies_nothing_again(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
    fixtures: list[Fixture],
    key_dir: Path,
) -> None:
    """Two handlers of one event, run by a real (in-process) worker: each marks under its own name. After
    ``forget`` the same event is accepted and handled again, and both handlers find their marks."""
    set_worker_env(env, tmp_path, monkeypatch)
    settings = configure_in_process()
    db = sqlite3_database(tmp_path / "app.sqlite3")
    with db.connect() as connection, db.transaction(connection):
        db.run(connection, EFFECTS, {})
    seen: list[tuple[str, bool]] = []

    def book(event: object, ctx: Context) -> None:
        with db.connect() as connection, db.transaction(connection):
            applied = ctx.first_time(connection)
            if applied:
                db.write(connection, ctx)
        seen.append((ctx.handler, applied))

    def audit(event: object, ctx: Context) -> None:
        book(event, ctx)

    registry = Registry()
    registry.add(book, None)
    registry.add(audit, None)
    dispatch.configure(dispatch.Runtime(settings, load_keyring(key_dir), registry))
    fixture = fixtures[0]
    names = [handler_name(book), handler_name(audit)]

    assert await post_all([fixture]) == ["accepted"]
    drain(settings, redis_client)
    assert forget(redis_client, read_settings().dedup_ttl_seconds, fixture.event_id) is Forgotten.FORGOTTEN
    assert await post_all([fixture]) == ["accepted"]
    drain(settings, redis_client)

    assert seen == [(names[0], True), (names[1], True), (names[0], False), (names[1], False)]
    assert db.effects() == sorted((fixture.event_id, name) for name in names)
    assert failed_ids(redis_client, settings.queue) == []
