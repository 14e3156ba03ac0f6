"""End to end: events per second accepted AND handled by ``kayle-webhooks serve`` + ``kayle-webhooks worker``
(their default process counts, the default RSA-4096 key of ``keys new``, one no-op handler) against a reference
pipeline doing the same job plainly: ``bench/reference_receiver.py`` (one uvicorn process) and RQ's forking
``Worker`` whose job decrypts the JWE again with jwcrypto (``bench/reference_worker.py``).

Both sides run the same number of worker processes, ``--worker-processes`` (default 1: the default of both
``kayle-webhooks worker`` and ``rq worker``), of the same kind: forking, the default of both, or with
``--simple`` RQ's in-process ``SimpleWorker`` on both sides. Each run starts its receiver and workers, waits
until the workers are registered, sends every pre-generated delivery once (closed loop, ``--connections``
keep-alive connections), and stops the clock when no job of those events is left in Redis (RQ deletes a job
once it has succeeded; result_ttl=0 on both sides). Rounds interleave the two sides. Target: ours >= 3x the
reference, the median of the rounds' ratios.

    python -m bench.end_to_end [--events 800] [--rounds 3] [--worker-processes 1] [--simple] [--bits 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import common, openloop
from kayle_webhooks.keys import DEFAULT_BITS
from receiver.jobs import job_id
from tests.helpers.processes import running, wait_until

SIDES = ("kayle", "reference")
QUEUE = {"kayle": "kayle", "reference": "reference"}
TARGET = 3.0


def measure(
    side: str, redis: common.RedisServer, keys: common.Keys, raw: list[bytes], event_ids: list[str],
    args: argparse.Namespace, port: int, workdir: Path,
) -> dict[str, float]:
    client = redis.client()
    client.flushall()
    env = common.receiver_env(keys, redis.url, KAYLE_HANDLERS="bench.noop_handler", KAYLE_LOAD_ENTRY_POINTS="false")
    simple = ["--simple"] if args.simple else []
    if side == "kayle":
        receiver = common.serve_argv(port)
        workers = [common.command("worker", "--processes", str(args.worker_processes), *simple)]
        job_keys = [f"rq:job:{job_id(event_id)}" for event_id in event_ids]
    else:
        receiver = common.uvicorn_argv("bench.reference_receiver:app", port)
        workers = [[sys.executable, "-m", "bench.reference_worker", *simple] for _ in range(args.worker_processes)]
        job_keys = [f"rq:job:evt-{event_id}" for event_id in event_ids]
    queue = QUEUE[side]
    with ExitStack() as stack:
        stack.enter_context(common.server(receiver, env, port, workdir / f"{side}-receiver.log"))
        for worker in workers:  # stopped with SIGTERM (RQ's warm shutdown), then their process groups
            stack.enter_context(running(worker, env, workdir / f"{side}-worker.log"))
        wait_until(lambda: client.scard(f"rq:workers:{queue}") >= args.worker_processes, f"{side} workers started")
        started = time.perf_counter()
        outcome = asyncio.run(openloop.closed_loop("127.0.0.1", port, raw, args.connections))
        accepted_at = time.perf_counter()
        if outcome.statuses.get(200, 0) != len(raw):
            raise RuntimeError(f"{side}: answers {outcome.statuses}, not {len(raw)} x 200 (see {workdir})")

        def handled() -> bool:
            left = int(client.exists(*job_keys))
            failed = int(client.zcard(f"rq:failed:{queue}"))
            if failed:
                raise RuntimeError(f"{side}: {failed} jobs failed (see {workdir / f'{side}-worker.log'})")
            return left == 0

        wait_until(handled, f"{side}: every event handled", timeout=600)
        done_at = time.perf_counter()
    return {
        "events_per_s": len(raw) / (done_at - started),
        "accepted_per_s": len(raw) / (accepted_at - started),
        "seconds": done_at - started,
        "drain_s": done_at - accepted_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument("--simple", action="store_true", help="in-process workers (RQ SimpleWorker) on both sides")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--bits", type=int, default=DEFAULT_BITS)
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    print(f"receivers: kayle-webhooks serve ({common.default_processes()} processes, its default) vs the reference "
          f"receiver (1 uvicorn process); workers: {args.worker_processes} {'simple' if args.simple else 'forking'} "
          f"process(es) each side; "
          f"RSA-{args.bits}; {args.events} events per run, {args.connections} connections")
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = common.make_keys(workdir, args.bits)
        print(f"key: {common.describe(keys)}")
        events = common.make_events(args.events, keys.public, common.KID, common.SECRET)
        event_ids = [payload["metadata"]["event_id"] for payload, _ in events]
        port = common.free_port()
        raw = [openloop.raw_request(request, "127.0.0.1", port, common.PATH) for _, request in events]
        with common.private_redis(workdir) as redis:
            for number in range(1, args.rounds + 1):
                for side in SIDES:
                    figures = measure(side, redis, keys, raw, event_ids, args, port, workdir)
                    results[side].append(figures)
                    print(f"round {number} {side:<9} {figures['events_per_s']:7.1f} events/s handled  "
                          f"(accepted at {figures['accepted_per_s']:7.1f}/s, {figures['seconds']:.1f} s, "
                          f"queue drained {figures['drain_s']:.1f} s after the last answer)", flush=True)
    medians = {side: common.median([run["events_per_s"] for run in runs]) for side, runs in results.items()}
    rounds = [k["events_per_s"] / r["events_per_s"] for k, r in zip(results["kayle"], results["reference"],
                                                                      strict=True)]
    ratio = common.median(rounds)
    print(f"\nmedians: kayle {medians['kayle']:.1f} events/s, reference {medians['reference']:.1f} events/s")
    print(f"kayle / reference = {ratio:.2f}x, the median of the rounds' ratios {', '.join(f'{r:.2f}' for r in rounds)}"
          f" (target >= {TARGET:g}x); ratio of the medians {medians['kayle'] / medians['reference']:.2f}x")
    common.emit(
        "end_to_end",
        {"bits": args.bits, "worker_processes": args.worker_processes, "simple": args.simple, "events": args.events,
         "medians": medians,
         "kayle_to_reference": round(ratio, 3), "raw": results},
        [common.check(f"end to end, RSA-{args.bits}: kayle / reference", ratio, f">= {TARGET:g}x", ratio >= TARGET)],
    )


if __name__ == "__main__":
    main()
