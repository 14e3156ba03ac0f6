"""Receiver throughput: ``kayle-webhooks serve`` against the HTTP ceiling and a plain reference receiver.

Pre-generates unique, validly signed deliveries with the project's sender code, then drives
each server (one uvicorn process each, same private redis-server with AOF everysec) with
``wrk`` for a fixed time, in interleaved rounds so that machine noise falls on all three alike.
Prints req/s and latency p50/p99 per round, the medians, and the ratios.

    python -m bench.receiver_throughput [--rounds 3] [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import common
from kayle_webhooks.testing import SignedRequest

TARGETS = ("ceiling", "reference", "kayle")
FIGURES = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
LUA = common.REPO / "bench" / "deliveries.lua"


def write_requests(path: Path, deliveries: list[SignedRequest]) -> None:
    with path.open("w", encoding="ascii") as out:
        for delivery in deliveries:
            h = delivery.headers
            fields = (h["X-Kayle-Signature"], h["X-Kayle-Delivery-Id"], h["X-Kayle-Event"], delivery.body.decode())
            out.write("\t".join(fields) + "\n")


def run_wrk(url: str, requests_file: Path, seconds: float, connections: int, threads: int = 1) -> dict[str, float]:
    env = dict(os.environ, BENCH_REQUESTS=str(requests_file), BENCH_PATH=common.PATH, BENCH_THREADS=str(threads))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "15s", "-s", str(LUA), url]
    output = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    figures: dict[str, float] = json.loads(line[4:])
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def argv_for(target: str, port: int) -> list[str]:
    if target == "kayle":
        return common.serve_argv(port)
    return common.uvicorn_argv(f"bench.{target}_{'app' if target == 'ceiling' else 'receiver'}:app", port)


def stored(redis: common.RedisServer, target: str) -> int:
    pattern = {"kayle": "kayle:event:*", "reference": "seen:*"}.get(target)
    if pattern is None:
        return -1
    return sum(1 for _ in redis.client().scan_iter(pattern, count=1000))


def measure(
    target: str,
    redis: common.RedisServer,
    keys: common.Keys,
    files: dict[str, Path],
    args: argparse.Namespace,
    log: Path,
) -> dict[str, float]:
    redis.client().flushall()
    port = common.free_port()
    env = common.receiver_env(keys, redis.url, REFERENCE_KEY_FILE=str(keys.directory / f"{common.KID}.pem"))
    url = f"http://127.0.0.1:{port}{common.PATH}"
    with common.server(argv_for(target, port), env, port, log) as process:
        run_wrk(url, files["warmup"], 2, args.connections)
        redis.client().flushall()
        cpu_before = common.cpu_seconds(process.pid)
        figures = run_wrk(url, files["main"], args.seconds, args.connections)
        figures["cpu_us_per_request"] = (common.cpu_seconds(process.pid) - cpu_before) / figures["requests"] * 1e6
    figures["stored"] = stored(redis, target)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--deliveries", type=int, default=40000, help="unique deliveries per run (no repeats)")
    args = parser.parse_args()
    common.require("wrk", "apt-get install wrk")
    print(f"machine: {common.machine()}")
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = common.make_keys(workdir)
        started = time.monotonic()
        files = {"warmup": workdir / "warmup.tsv", "main": workdir / "main.tsv"}
        write_requests(files["warmup"], common.make_deliveries(1000, keys))
        write_requests(files["main"], common.make_deliveries(args.deliveries, keys))
        print(f"generated {args.deliveries} unique deliveries in {time.monotonic() - started:.1f} s "
              f"(RSA-2048 key, four event types in turn)")
        print(f"wrk: 1 thread, {args.connections} connections, {args.seconds:g} s per run, {args.rounds} rounds")
        results: dict[str, list[dict[str, float]]] = {target: [] for target in TARGETS}
        with common.private_redis(workdir) as redis:
            for round_number in range(1, args.rounds + 1):
                for target in TARGETS:
                    figures = measure(target, redis, keys, files, args, workdir / f"{target}.log")
                    results[target].append(figures)
                    print(
                        f"round {round_number} {target:<9} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms"
                        f"  p99 {figures['p99_ms']:7.2f} ms  non-2xx {figures['non2xx']:.0f}"
                        f"  errors {figures['socket_errors']:.0f}  stored {figures['stored']:.0f}"
                        f"  wraps {figures['wraps']:.0f}  cpu/req {figures['cpu_us_per_request']:.0f} us",
                        flush=True,
                    )
    report(results)


def report(results: dict[str, list[dict[str, float]]]) -> None:
    medians = {
        target: {name: common.median([run[name] for run in runs]) for name in FIGURES}
        for target, runs in results.items()
    }
    print("\nmedians:")
    for target, figures in medians.items():
        print(
            f"  {target:<9} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms"
            f"  p99 {figures['p99_ms']:7.2f} ms"
            f"  server CPU per request {figures['cpu_us_per_request']:5.0f} us"
        )
    # Judged on the median of each round's own ratio: a round's runs share the machine's mood of the moment.
    rounds = [k["rps"] / r["rps"] for k, r in zip(results["kayle"], results["reference"], strict=True)]
    to_reference = common.median(rounds)
    to_ceiling = common.median([k["rps"] / c["rps"] for k, c in zip(results["kayle"], results["ceiling"], strict=True)])
    print(f"kayle / reference = {to_reference:.2f}x, the median of the rounds' ratios "
          f"{', '.join(f'{r:.2f}' for r in rounds)} (target >= 2.0x); ratio of the medians "
          f"{medians['kayle']['rps'] / medians['reference']['rps']:.2f}x")
    print(f"kayle / ceiling   = {to_ceiling:.2f}x")
    if any(run["wraps"] or run["non2xx"] or run["socket_errors"] for t in ("kayle", "reference") for run in results[t]):
        print("WARNING: some run repeated deliveries or had failures; raise --deliveries or look at the logs")
    common.emit("receiver_throughput", {
        "medians": medians, "kayle_to_reference": round(to_reference, 3), "kayle_to_ceiling": round(to_ceiling, 3),
        "raw": results,
    })


if __name__ == "__main__":
    main()
