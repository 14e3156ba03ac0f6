"""Receiver throughput: ``kayle-webhooks serve`` with its defaults against a plain reference receiver and the
HTTP ceiling, with an RSA-2048 key and with the default key of ``keys new`` (RSA-4096).

Pre-generates unique, validly signed deliveries with the project's sender code, then drives each server
(same private redis-server with AOF everysec) with ``wrk`` for a fixed time, in interleaved rounds so that
machine noise falls on all alike. ``serve`` runs its default number of processes (one per usable CPU); the
reference receiver and the ceiling app run as a developer runs a Starlette app: one uvicorn process.
Prints req/s, latency p50/p99 and server CPU per request per round, the medians, and the ratios.
Target: ours >= 3x the reference with either key, the median of the rounds' ratios.

    python -m bench.receiver_throughput [--rounds 3] [--seconds 10] [--connections 16] [--deliveries 30000]
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

SERVERS = ("reference", "kayle")  # the two measured with each key size; the ceiling decrypts nothing
TARGET = 3.0
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
    if target.startswith("kayle"):
        return common.serve_argv(port)
    return common.uvicorn_argv(f"bench.{target}_{'app' if target == 'ceiling' else 'receiver'}:app", port)


def stored(redis: common.RedisServer, target: str) -> int:
    """How many events the run stored: the jobs in the server's queue."""
    if target == "ceiling":
        return -1
    return int(redis.client().llen(f"rq:queue:{'kayle' if target == 'kayle' else 'reference'}"))


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
    env = common.receiver_env(keys, redis.url, KAYLE_MAX_PENDING_EVENTS="0")  # no worker runs: never "queue full"
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
    parser.add_argument("--deliveries", type=int, default=30000,
                        help="unique deliveries per run with RSA-2048 (no repeats); a third of it with RSA-4096")
    args = parser.parse_args()
    common.require("wrk", "apt-get install wrk")
    print(f"machine: {common.machine()}")
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        keys: dict[int, common.Keys] = {}
        files: dict[int, dict[str, Path]] = {}
        for bits in common.KEY_SIZES:
            keys[bits] = common.make_keys(workdir, bits)
            files[bits] = {"warmup": workdir / f"warmup-{bits}.tsv", "main": workdir / f"main-{bits}.tsv"}
            write_requests(files[bits]["warmup"], common.make_deliveries(1000, keys[bits]))
            count = args.deliveries if bits <= 2048 else args.deliveries // 3
            write_requests(files[bits]["main"], common.make_deliveries(count, keys[bits]))
        print(f"generated the deliveries in {time.monotonic() - started:.1f} s (four event types in turn); keys: "
              f"{', '.join(common.describe(keys[bits]) for bits in common.KEY_SIZES)}")
        print(f"kayle: serve with its default {common.default_processes()} processes; reference and ceiling: one "
              f"uvicorn process; wrk: 1 thread, {args.connections} connections, {args.seconds:g} s per run, "
              f"{args.rounds} rounds")
        runs = [("ceiling", common.KEY_SIZES[0])] + [(server, bits) for bits in common.KEY_SIZES for server in SERVERS]
        results: dict[str, list[dict[str, float]]] = {}
        with common.private_redis(workdir) as redis:
            for round_number in range(1, args.rounds + 1):
                for target, bits in runs:
                    name = target if target == "ceiling" else f"{target}-{bits}"
                    figures = measure(target, redis, keys[bits], files[bits], args, workdir / f"{name}.log")
                    results.setdefault(name, []).append(figures)
                    print(
                        f"round {round_number} {name:<15} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms"
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
            f"  {target:<15} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms"
            f"  p99 {figures['p99_ms']:7.2f} ms"
            f"  server CPU per request {figures['cpu_us_per_request']:5.0f} us"
        )
    ratios: dict[str, float] = {}
    checks = []
    for bits in common.KEY_SIZES:
        ours, reference = results[f"kayle-{bits}"], results[f"reference-{bits}"]
        # Judged on the median of each round's own ratio: a round's runs share the machine's mood of the moment.
        rounds = [k["rps"] / r["rps"] for k, r in zip(ours, reference, strict=True)]
        ratios[f"kayle_to_reference_{bits}"] = ratio = common.median(rounds)
        ratios[f"kayle_to_ceiling_{bits}"] = common.median(
            [k["rps"] / c["rps"] for k, c in zip(ours, results["ceiling"], strict=True)])
        print(f"RSA-{bits}: kayle / reference = {ratio:.2f}x, the median of the rounds' ratios "
              f"{', '.join(f'{r:.2f}' for r in rounds)} (target >= {TARGET:g}x); ratio of the medians "
              f"{medians[f'kayle-{bits}']['rps'] / medians[f'reference-{bits}']['rps']:.2f}x; "
              f"kayle / ceiling = {ratios[f'kayle_to_ceiling_{bits}']:.2f}x")
        checks.append(common.check(f"receiver, RSA-{bits}: serve (defaults) / reference", ratio,
                                   f">= {TARGET:g}x", ratio >= TARGET))
    if any(run["wraps"] or run["non2xx"] or run["socket_errors"]
           for target, runs in results.items() if target != "ceiling" for run in runs):
        print("WARNING: some run repeated deliveries or had failures; raise --deliveries or look at the logs")
    common.emit("receiver_throughput", {"medians": medians, **{k: round(v, 3) for k, v in ratios.items()},
                                        "processes": common.default_processes(), "raw": results}, checks)


if __name__ == "__main__":
    main()
