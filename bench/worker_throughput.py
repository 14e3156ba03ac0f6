"""Worker throughput: events/s through ``kayle-webhooks worker --burst`` (one no-op handler) against
bare RQ no-op jobs with the same worker class (``rq worker -w`` RQ's ``SimpleWorker`` or our
``KayleWorker``), in the same run, for both worker classes.

The queue is filled first (real deliveries through the receiver's own intake, so every job carries
a JWE the worker decrypts again); the time is the burst worker's wall time minus its start-up time
(a burst over an empty queue). Target: at least 0.8x bare RQ for both classes.

    python -m bench.worker_throughput [--jobs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_sync
from redis.asyncio import Redis as AsyncRedis
from rq import Queue

from bench import common
from receiver import jwe
from receiver.envelope import read_envelope
from receiver.intake import Intake
from receiver.jobs import JobArgs
from receiver.settings import load_config


def fill_kayle(count: int, keys: common.Keys, env: dict[str, str]) -> None:
    os.environ.update(env)
    config = load_config()

    async def store_all() -> None:
        client = AsyncRedis.from_url(env["KAYLE_REDIS_URL"])
        intake = Intake(client, config.settings)
        for delivery in common.make_deliveries(count, keys):
            parsed = jwe.parse(delivery.body)
            envelope = read_envelope(jwe.decrypt(parsed, config.keyring))
            await intake.store(JobArgs(delivery.body.decode(), envelope.event_id, envelope.type, parsed.kid,
                                        delivery.headers["X-Kayle-Delivery-Id"], time.time()))
        await client.aclose()

    asyncio.run(store_all())


def fill_bare(count: int, url: str) -> None:
    queue = Queue("bare", connection=redis_sync.Redis.from_url(url))
    with queue.connection.pipeline() as pipe:
        for _ in range(count):
            queue.enqueue("bench.bare_job.bare_job", result_ttl=0, pipeline=pipe)
        pipe.execute()


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=common.REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = common.make_keys(workdir)
        with common.private_redis(workdir) as redis:
            # One no-op handler, even where plugins are installed as entry points (the example, in a dev venv).
            env = common.receiver_env(keys, redis.url, KAYLE_HANDLERS="bench.noop_handler", KAYLE_LOG_LEVEL="WARNING",
                                      KAYLE_LOAD_ENTRY_POINTS="false")
            for number in range(1, args.rounds + 1):
                for kind in ("forking", "simple"):
                    simple = ["--simple"] if kind == "simple" else []
                    # The classes `kayle-webhooks worker` runs (KayleWorker only changes the heartbeat's TTL).
                    rq_class = ["-w", "rq.worker.SimpleWorker" if kind == "simple" else "workers.process.KayleWorker"]
                    kayle_argv = common.command("worker", "--burst", *simple)
                    bare_argv = [sys.executable, "-m", "rq.cli", "worker", "--burst", "-u", redis.url, "-q",
                                 *rq_class, "bare"]
                    redis.client().flushall()
                    kayle_startup = timed(kayle_argv, env)
                    fill_kayle(args.jobs, keys, env)
                    kayle = args.jobs / (timed(kayle_argv, env) - kayle_startup)
                    bare_startup = timed(bare_argv, env)
                    fill_bare(args.jobs, redis.url)
                    bare = args.jobs / (timed(bare_argv, env) - bare_startup)
                    results.setdefault(f"{kind} kayle", []).append(kayle)
                    results.setdefault(f"{kind} bare", []).append(bare)
                    print(f"round {number} {kind:<8} kayle {kayle:7.0f} events/s  bare RQ {bare:7.0f} jobs/s  "
                          f"ratio {kayle / bare:.2f}", flush=True)
    ratios = {}
    for kind in ("forking", "simple"):
        kayle, bare = common.median(results[f"{kind} kayle"]), common.median(results[f"{kind} bare"])
        # Judged on the median of each round's own ratio: a round's runs share the machine's mood of the moment.
        ratios[kind] = common.median([k / b for k, b in zip(results[f"{kind} kayle"], results[f"{kind} bare"],
                                                             strict=True)])
        print(f"median {kind:<8} kayle {kayle:7.0f}/s  bare RQ {bare:7.0f}/s  ratio {ratios[kind]:.2f}, the median "
              f"of the rounds' ratios (target >= 0.8); ratio of the medians {kayle / bare:.2f}")
    common.emit("worker_throughput", {"ratios": ratios, "raw": results, "jobs": args.jobs})


if __name__ == "__main__":
    main()
