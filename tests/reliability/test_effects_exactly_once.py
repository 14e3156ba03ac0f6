"""Exactly-once effects under process death: ``ctx.first_time`` on real SQLite and PostgreSQL databases.

300 events through a real receiver and a forking worker (2 processes). Four handlers
(``tests.plugins.effect_handlers``) each insert one row per event: two in one transaction with the mark
of ``ctx.first_time``, two without it (as handlers that do not use the API). Work horses are SIGKILLed three
ways: (a) right after a handler's transaction committed, before its completion is recorded (each handler of
10 chosen events, once); (b) after its row was written, before the commit (each handler of 10 other events,
once); (c) at random moments of their lives, by a thread of this test. A killed job runs again at once (retry
interval 0). The marked handlers must end with exactly one row per event, every event completed; the
duplicates the unmarked handlers wrote under the same kills are reported (``-s``), not asserted.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from rq.job import Job

from receiver.jobs import job_id
from receiver.settings import Config
from tests.helpers.processes import (
    PATIENCE,
    command,
    free_port,
    running,
    start_group,
    stop_group,
    subprocess_env,
    wait_for_http,
    wait_until,
)
from tests.helpers.sending import PATH, Event, event_ids, make_events, send_until_2xx, sender
from tests.helpers.vectors import FIXTURE_KID
from tests.helpers.workers import failed_ids, handled_again, pending
from workers.effects import TABLE

pytestmark = pytest.mark.slow

QUEUE = "kayle"
EVENTS = 300
# tests.plugins.effect_handlers (not imported here: it would register them)
MARKED, PLAIN = ("marked_a", "marked_b"), ("plain_a", "plain_b")
MODULE = "tests.plugins.effect_handlers"
DIE_EVERY = 30  # 10 events (ids[0::30]) die after each handler's commit, 10 others (ids[15::30]) before it
RANDOM_KILLS = 30  # signals at most
KILL_SHARE = 0.08  # of the forks: about 30 of a run's 400-450
KILL_WITHIN = 0.05  # seconds after the fork announced itself
EFFECT_TABLES = ("effects_marked", "effects_plain")


@dataclass(frozen=True)
class EffectDb:
    """The handlers' database: a SQLite file path or a PostgreSQL URL, as KAYLE_TEST_EFFECT_DB names it."""

    target: str

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.target.startswith("postgresql://"):
            with psycopg.connect(self.target) as connection:
                return connection.execute(sql).fetchall()
        with closing(sqlite3.connect(self.target, timeout=60)) as connection:
            return connection.execute(sql).fetchall()

    def create_tables(self) -> None:
        for table in EFFECT_TABLES:
            ddl = f"CREATE TABLE {table} (event_id TEXT NOT NULL, handler TEXT NOT NULL, attempt INT, pid INT)"
            if self.target.startswith("postgresql://"):
                with psycopg.connect(self.target) as connection:
                    connection.execute(ddl)
            else:
                with closing(sqlite3.connect(self.target)) as connection:
                    connection.execute(ddl)

    def pairs(self, table: str) -> Counter[tuple[str, str]]:
        return Counter((e, h) for e, h in self.rows(f"SELECT event_id, handler FROM {table}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def effect_db(request: pytest.FixtureRequest, tmp_path: Path) -> EffectDb:
    target = str(tmp_path / "effects.sqlite3") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    db = EffectDb(target)
    db.create_tables()
    return db


@dataclass
class Run:
    ids: list[str]
    after_commit: list[str]  # events whose handlers each die once right after their commit
    before_commit: list[str]  # ... once between their write and the commit
    died: Counter[tuple[str, str]]  # (kill point, handler) -> deaths, as the handlers recorded them
    signalled: int  # random SIGKILLs sent (some reach a horse whose job had finished: they interrupt nothing)
    random_kills: int  # jobs the random SIGKILLs interrupted
    rerun: list[str]  # events the worker's log shows handled on a later attempt
    seconds: float


def kill_horses_at_random(forks: Path, group: int, stop: threading.Event, signalled: list[int], seed: int) -> None:
    """Follow the pids the worker's forks announce (``KAYLE_TEST_FORKS``); SIGKILL one in KILL_SHARE of them
    after a random delay of up to KILL_WITHIN seconds, if it is a work horse of the worker whose process group
    is ``group``, whatever it is doing by then. At most RANDOM_KILLS signals, so that a slow machine's jobs are
    not killed over and over. The signal goes through a pidfd opened before the check: it reaches the checked
    process or none, never one that took over the pid."""
    rng = random.Random(seed)
    seen = 0
    aimed: list[tuple[float, int, int]] = []  # (when, pid, pidfd)
    try:
        while not stop.wait(0.005):
            lines = forks.read_text().splitlines() if forks.exists() else []
            for line in lines[seen:]:
                if len(signalled) + len(aimed) < RANDOM_KILLS and rng.random() < KILL_SHARE:
                    pid, when = int(line), time.monotonic() + rng.uniform(0, KILL_WITHIN)
                    with suppress(ProcessLookupError):
                        aimed.append((when, pid, os.pidfd_open(pid)))
            seen = len(lines)
            for target in [t for t in aimed if t[0] <= time.monotonic()]:
                aimed.remove(target)
                _, pid, descriptor = target
                with suppress(ProcessLookupError, FileNotFoundError):
                    if is_horse_of(pid, group):
                        signal.pidfd_send_signal(descriptor, signal.SIGKILL)
                        signalled.append(pid)
                os.close(descriptor)
    finally:
        for _, _, descriptor in aimed:
            os.close(descriptor)


def is_horse_of(pid: int, group: int) -> bool:
    """A work horse of the worker in process group ``group``: RQ puts each horse in a group of its own, forked by
    one of the worker's processes (a horse that has not left its parent's group yet is spared)."""

    def parent_and_group(of: int) -> tuple[int, int]:
        stat = Path(f"/proc/{of}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[1]), int(fields[2])

    parent, own_group = parent_and_group(pid)
    return own_group == pid and parent_and_group(parent)[1] == group


def send(url: str, events: list[Event], secret: str) -> list[str]:
    """8 concurrent senders on one HTTP client, each retrying until its delivery is answered 2xx."""
    with sender(8) as http, ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda event: send_until_2xx(http, url, event[1], secret, []), events))


def horses_killed(worker_log: Path) -> int:
    """Jobs whose work horse died of SIGKILL before RQ recorded them as finished, as the worker logged them."""
    return sum("Work-horse terminated unexpectedly" in line and "signal 9" in line
               for line in worker_log.read_text().splitlines())


def run_under_kills(
    db: EffectDb, url: str, serve_env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis
) -> Run:
    """Send EVENTS events while a forking worker (2 processes) handles them, its work horses killed at the three
    kinds of point; return once every event's job has completed (succeeded, and so deleted)."""
    events = make_events(EVENTS, config.keyring[FIXTURE_KID].public_key(), FIXTURE_KID, config.secrets[0])
    ids = event_ids(events)
    after_commit, before_commit = ids[::DIE_EVERY], ids[DIE_EVERY // 2 :: DIE_EVERY]
    died_dir = tmp_path / "died"
    died_dir.mkdir()
    forks = tmp_path / "forks.txt"
    worker_env = {
        **serve_env,
        "KAYLE_TEST_EFFECT_DB": db.target,
        "KAYLE_TEST_DIE_AFTER_COMMIT": ",".join(after_commit),
        "KAYLE_TEST_DIE_BEFORE_COMMIT": ",".join(before_commit),
        "KAYLE_TEST_DIED_DIR": str(died_dir),
        "KAYLE_TEST_FORKS": str(forks),
    }
    log_path = tmp_path / "worker.log"
    started = time.monotonic()
    signalled: list[int] = []
    stop = threading.Event()
    worker = start_group(command("worker", "--processes", "2"), worker_env, log_path)
    killer = threading.Thread(target=kill_horses_at_random, args=(forks, worker.pid, stop, signalled, 1))
    try:
        killer.start()
        assert send(url, events, config.secrets[0]) == ["accepted"] * EVENTS
        jobs = [Job.key_for(job_id(event_id)) for event_id in ids]

        def completed() -> bool:  # a job is deleted when it succeeds, kept when it fails
            assert failed_ids(redis_client, QUEUE) == [], "an event failed"
            return redis_client.exists(*jobs) == 0

        wait_until(completed, "every event completed", timeout=2 * PATIENCE)
    finally:
        stop.set()
        killer.join(timeout=30)
        stop_group(worker)
    seconds = time.monotonic() - started
    died = Counter(tuple(path.name.split(".")[::2]) for path in died_dir.iterdir())  # point.event_id.handler
    random_kills = horses_killed(log_path) - died.total()
    return Run(ids, after_commit, before_commit, died, len(signalled), random_kills, handled_again(log_path), seconds)


def test_effects_written_with_first_time_happen_exactly_once_when_work_horses_die(
    effect_db: EffectDb, env: dict[str, str], config: Config, tmp_path: Path, redis_client: redis.Redis,
    redis_url: str,
) -> None:
    serve_env = subprocess_env(
        env,
        KAYLE_REDIS_URL=redis_url,
        KAYLE_HANDLERS=MODULE,
        KAYLE_LOAD_ENTRY_POINTS="false",
        KAYLE_TOLERANCE_SECONDS="600",
        KAYLE_ABANDONED_JOB_SECONDS="6",
        # A killed job is requeued at once, up to 12 times (set by the receiver, on each job).
        KAYLE_RETRY_INTERVALS=",".join(["0"] * 12),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    with running(command("serve", "--port", str(port)), serve_env, tmp_path / "serve.log") as receiver:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
        run = run_under_kills(effect_db, url, serve_env, config, tmp_path, redis_client)

    written, unmarked = effect_db.pairs("effects_marked"), effect_db.pairs("effects_plain")
    database = "postgresql" if effect_db.target.startswith("postgresql://") else "sqlite"
    points = Counter(point for point, _ in run.died.elements())
    print(  # reported with -s
        f"\n{database}: {len(run.ids)} events, 4 handlers; work horses killed: {points['after']} right after a "
        f"handler's commit, {points['before']} between its write and its commit, {run.random_kills} at random "
        f"({run.signalled} signals); {len(run.rerun)} events ran again; duplicate rows: "
        f"{sum(written.values()) - len(written)} with first_time, {sum(unmarked.values()) - len(unmarked)} without; "
        f"{run.seconds:.1f} s"
    )

    chosen = {"after": len(run.after_commit), "before": len(run.before_commit)}
    wanted = {(point, handler): n for point, n in chosen.items() for handler in MARKED + PLAIN}
    assert run.died == wanted, "a handler never died at its kill point"
    assert run.random_kills > 0, "no work horse was killed at random: nothing was tested"
    assert set(run.after_commit + run.before_commit) <= set(run.rerun), "a killed event did not run again"
    missing = {(event_id, handler) for event_id in run.ids for handler in MARKED} - set(written)
    twice = sorted((pair, n) for pair, n in written.items() if n > 1)
    assert not missing and not twice, f"{len(missing)} rows missing, e.g. {sorted(missing)[:3]}; twice: {twice[:3]}"
    assert len(written) == len(run.ids) * len(MARKED)
    # The rows of a run killed before its commit were rolled back with its marks: a later attempt wrote them.
    attempts = {(e, h): a for e, h, a in effect_db.rows("SELECT event_id, handler, attempt FROM effects_marked")}
    assert all(attempts[event_id, handler] > 1 for event_id in run.before_commit for handler in MARKED)
    marks = effect_db.rows(f"SELECT event_id, handler FROM {TABLE}")
    assert sorted(marks) == sorted((event_id, f"{MODULE}.{handler}") for event_id in run.ids for handler in MARKED)
    assert failed_ids(redis_client, QUEUE) == [] and not pending(redis_client, QUEUE)  # nothing failed or left
