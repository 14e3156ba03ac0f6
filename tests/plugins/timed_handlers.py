"""Handlers for the process-death tests: each records when it starts and when it ends.

Records go to the JSON-lines file ``KAYLE_TEST_RECORD`` (ids, pid, attempt and outcome only,
never the payload), one ``started`` line before the handler works and one ``ok`` line after:
a ``started`` without its ``ok`` is a handler caught mid-run. Switches, read at call time:

- ``KAYLE_TEST_SLOW_SECONDS``: how long ``slow`` works (default 0.005 s);
- ``KAYLE_TEST_STALL``: comma-separated event ids for which ``slow`` works 120 s instead,
  so a test can kill or stop its worker while that handler is certainly running;
- ``KAYLE_TEST_DIE_AFTER``: comma-separated event ids; on their first attempt, ``first`` leaves a
  thread that SIGKILLs the work horse as soon as ``last`` is recorded as completed (or the progress
  set is gone), i.e. just after every handler completed, most often before RQ records the job as
  finished (a machine lost then).

Read the records with :func:`tests.helpers.workers.read_records` and ``ok_counts``. Only worker
processes import this module (``KAYLE_HANDLERS``): importing it registers its handlers in the
process-wide registry, so test modules must not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import redis
from rq.job import Job

from receiver.jobs import job_id
from workers import BaseEvent, Context, on_any
from workers.jobclass import DONE_FIELD
from workers.registry import handler_name


def _record(handler: str, ctx: Context, outcome: str) -> None:
    path = os.environ.get("KAYLE_TEST_RECORD")
    if not path:
        return
    line = {
        "handler": handler,
        "event_id": ctx.event_id,
        "type": ctx.event_type,
        "attempt": ctx.attempt,
        "outcome": outcome,
        "pid": os.getpid(),
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def _work_seconds(ctx: Context) -> float:
    if ctx.event_id in os.environ.get("KAYLE_TEST_STALL", "").split(","):
        return 120.0
    return float(os.environ.get("KAYLE_TEST_SLOW_SECONDS", "0.005"))


@on_any
def first(event: BaseEvent, ctx: Context) -> None:
    _record("first", ctx, "started")
    if ctx.attempt == 1 and ctx.event_id in os.environ.get("KAYLE_TEST_DIE_AFTER", "").split(","):
        threading.Thread(target=_die_once_every_handler_completed, args=(ctx.event_id,), daemon=True).start()
    _record("first", ctx, "ok")


@on_any
def slow(event: BaseEvent, ctx: Context) -> None:
    _record("slow", ctx, "started")
    time.sleep(_work_seconds(ctx))
    _record("slow", ctx, "ok")


@on_any
def last(event: BaseEvent, ctx: Context) -> None:
    _record("last", ctx, "started")
    _record("last", ctx, "ok")


def _die_once_every_handler_completed(event_id: str) -> None:
    connection = redis.Redis.from_url(os.environ["KAYLE_REDIS_URL"])
    job_key, last_name = Job.key_for(job_id(event_id)), handler_name(last)
    while True:  # until every handler is recorded as completed (or the job is gone, finished, with its progress)
        done = connection.hget(job_key, DONE_FIELD)
        if (done is not None and last_name in json.loads(done)) or not connection.exists(job_key):
            break
    os.kill(os.getpid(), signal.SIGKILL)
