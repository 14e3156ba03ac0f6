"""Latency under steady load: ``kayle-webhooks serve`` (its default process count) at a constant offered rate
(default 200/s), with the default key of ``keys new`` (RSA-4096) unless ``--bits`` says otherwise.

Open-loop client (see bench/openloop.py): latency counts from each request's due time, so
stalls are not hidden. Several rounds; prints p50/p90/p99/max per round and the median p99.
Target: p99 under 15 ms at 200 deliveries/s.

    python -m bench.latency [--rate 200] [--seconds 15] [--rounds 3] [--bits 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench import common, openloop
from kayle_webhooks.keys import DEFAULT_BITS

P99_TARGET_MS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bits", type=int, default=DEFAULT_BITS)
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    count = int(args.rate * args.seconds)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = common.make_keys(workdir, args.bits)
        print(f"key: {common.describe(keys)}")
        with common.private_redis(workdir) as redis:
            port = common.free_port()
            env = common.receiver_env(keys, redis.url)
            with common.server(common.serve_argv(port), env, port, workdir / "serve.log"):
                warmup = [openloop.raw_request(d, "127.0.0.1", port, common.PATH)
                          for d in common.make_deliveries(200, keys)]
                asyncio.run(openloop.run("127.0.0.1", port, warmup, args.rate))
                for number in range(1, args.rounds + 1):
                    requests = [openloop.raw_request(d, "127.0.0.1", port, common.PATH)
                                for d in common.make_deliveries(count, keys)]
                    outcome = asyncio.run(openloop.run("127.0.0.1", port, requests, args.rate))
                    figures = summarise(outcome)
                    rounds.append(figures)
                    print(
                        f"round {number}: {len(outcome.latencies_ms)} deliveries at {args.rate:g}/s  "
                        f"p50 {figures['p50_ms']:.2f} ms  p90 {figures['p90_ms']:.2f} ms  "
                        f"p99 {figures['p99_ms']:.2f} ms  max {figures['max_ms']:.2f} ms  "
                        f"statuses {outcome.statuses}  errors {outcome.errors} {outcome.error_kinds or ''}"
                        f"  late starts {outcome.late_starts}",
                        flush=True,
                    )
    p99 = common.median([r["p99_ms"] for r in rounds])
    p50 = common.median([r["p50_ms"] for r in rounds])
    print(f"\nmedian over {args.rounds} rounds ({common.default_processes()} receiver processes, RSA-{args.bits}): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 < {P99_TARGET_MS:g} ms)")
    common.emit("latency", {"rate": args.rate, "bits": args.bits, "median_p50_ms": p50, "median_p99_ms": p99,
                            "raw": rounds},
                [common.check(f"latency p99 at {args.rate:g}/s, RSA-{args.bits}, ms", p99, f"< {P99_TARGET_MS:g} ms",
                              p99 < P99_TARGET_MS)])


def summarise(outcome: openloop.Outcome) -> dict[str, float]:
    values = outcome.latencies_ms
    return {
        "p50_ms": common.percentile(values, 0.50),
        "p90_ms": common.percentile(values, 0.90),
        "p99_ms": common.percentile(values, 0.99),
        "max_ms": max(values),
        "errors": outcome.errors,
        "non2xx": sum(n for status, n in outcome.statuses.items() if status >= 300),
    }


if __name__ == "__main__":
    main()
