"""Worker throughput: events/s through ``kayle-webhooks worker --burst`` (one no-op handler) against
bare RQ no-op jobs with the same worker class (``rq worker -w`` RQ's ``SimpleWorker`` or our
``KayleWorker``), in the same run, for both worker classes, with an RSA-2048 key and with the default
key of ``keys new`` (RSA-4096).

The queue is filled first with what the receiver stores (real deliveries, their content key sealed
for the worker, written through the receiver's own intake); the time is the burst worker's wall time
minus its start-up time (a burst over an empty queue). Each round runs bare RQ and then ours with each
key, for each worker class. Target: at least 0.9x bare RQ with the RSA-4096 key, for both classes.

    python -m bench.worker_throughput [--jobs 600] [--rounds 3]

``--jobs`` is per run of a forking worker; a ``--simple`` run gets four times as many (it is about four times
faster: its runs last about as long, so that the machine's noise weighs about as much on both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_sync
from rq import Queue

from bench import common


def fill_bare(count: int, url: str) -> None:
    queue = Queue("bare", connection=redis_sync.Redis.from_url(url))
    with queue.connection.pipeline() as pipe:
        for _ in range(count):
            queue.enqueue("bench.bare_job.bare_job", result_ttl=0, pipeline=pipe)
        pipe.execute()


KINDS = ("forking", "simple")
SIMPLE_FACTOR = 4
TARGET = 0.9


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=common.REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = {bits: common.make_keys(workdir, bits) for bits in common.KEY_SIZES}
        print(f"keys: {', '.join(common.describe(keys[bits]) for bits in common.KEY_SIZES)}")
        counts = {"forking": args.jobs, "simple": args.jobs * SIMPLE_FACTOR}
        jobs = {bits: common.sealed_jobs(common.make_deliveries(max(counts.values()), keys[bits]), keys[bits])
                for bits in keys}
        with common.private_redis(workdir) as redis:
            # One no-op handler, even where plugins are installed as entry points (the example, in a dev venv).
            envs = {bits: common.receiver_env(keys[bits], redis.url, KAYLE_HANDLERS="bench.noop_handler",
                                              KAYLE_LOG_LEVEL="WARNING", KAYLE_LOAD_ENTRY_POINTS="false")
                    for bits in keys}
            for number in range(1, args.rounds + 1):
                for kind in KINDS:
                    simple = ["--simple"] if kind == "simple" else []
                    # The classes `kayle-webhooks worker` runs (KayleWorker only changes the heartbeat's TTL).
                    rq_class = ["-w", "rq.worker.SimpleWorker" if kind == "simple" else "workers.process.KayleWorker"]
                    kayle_argv = common.command("worker", "--burst", *simple)
                    bare_argv = [sys.executable, "-m", "rq.cli", "worker", "--burst", "-u", redis.url, "-q",
                                 *rq_class, "bare"]
                    env = envs[common.KEY_SIZES[0]]
                    redis.client().flushall()
                    bare_startup = timed(bare_argv, env)
                    count = counts[kind]
                    fill_bare(count, redis.url)
                    bare = count / (timed(bare_argv, env) - bare_startup)
                    results.setdefault(f"{kind} bare", []).append(bare)
                    line = f"round {number} {kind:<8} bare RQ {bare:6.0f} jobs/s"
                    for bits in common.KEY_SIZES:
                        redis.client().flushall()
                        kayle_startup = timed(kayle_argv, envs[bits])
                        common.store(jobs[bits][:count], envs[bits])
                        kayle = count / (timed(kayle_argv, envs[bits]) - kayle_startup)
                        results.setdefault(f"{kind} kayle-{bits}", []).append(kayle)
                        line += f"  kayle RSA-{bits} {kayle:6.0f} events/s (ratio {kayle / bare:.2f})"
                    print(line, flush=True)
    ratios: dict[str, float] = {}
    checks = []
    for kind in KINDS:
        bare = common.median(results[f"{kind} bare"])
        for bits in common.KEY_SIZES:
            kayle = common.median(results[f"{kind} kayle-{bits}"])
            # Judged on the median of each round's own ratio: a round's runs share the machine's mood of the moment.
            rounds = [k / b for k, b in zip(results[f"{kind} kayle-{bits}"], results[f"{kind} bare"], strict=True)]
            ratios[f"{kind} {bits}"] = ratio = common.median(rounds)
            print(f"median {kind:<8} RSA-{bits}: kayle {kayle:6.0f}/s  bare RQ {bare:6.0f}/s  ratio {ratio:.2f}, the "
                  f"median of the rounds' ratios {', '.join(f'{r:.2f}' for r in rounds)}; ratio of the medians "
                  f"{kayle / bare:.2f}")
            if bits == max(common.KEY_SIZES):
                checks.append(common.check(f"worker ({kind}), RSA-{bits}: kayle / bare RQ", ratio,
                                           f">= {TARGET:g}x", ratio >= TARGET))
    print(f"target: >= {TARGET:g} with RSA-{max(common.KEY_SIZES)}")
    common.emit("worker_throughput", {"ratios": ratios, "raw": results, "jobs": counts}, checks)


if __name__ == "__main__":
    main()
