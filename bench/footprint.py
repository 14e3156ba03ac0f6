"""Footprint: receiver RSS after 20,000 deliveries, and Redis memory per event once its job is done.

Drives ``kayle-webhooks serve`` with 20,000 unique deliveries (16 keep-alive connections, each sent once),
reads the process's resident set, then runs ``kayle-webhooks worker --burst`` with a no-op handler
and measures ``MEMORY USAGE`` of every key left per accepted event.
Targets: RSS under 100 MB; under 200 bytes per done event.

    python -m bench.footprint [--deliveries 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from bench import common, openloop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=20000)
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        keys = common.make_keys(workdir)
        deliveries = common.make_deliveries(args.deliveries, keys)
        with common.private_redis(workdir) as redis:
            port = common.free_port()
            env = common.receiver_env(keys, redis.url, KAYLE_HANDLERS="bench.noop_handler")
            with common.server(common.serve_argv(port), env, port, workdir / "serve.log") as process:
                started_mb = common.rss_mb(process.pid)
                raw = [openloop.raw_request(d, "127.0.0.1", port, common.PATH) for d in deliveries]
                outcome = asyncio.run(openloop.closed_loop("127.0.0.1", port, raw, 16))
                sent = sum(outcome.statuses.values())
                rss = common.rss_mb(process.pid)
            client = redis.client()
            accepted = sum(1 for _ in client.scan_iter("kayle:event:*", count=1000))
            worker = common.command("worker", "--burst", "--simple")
            subprocess.run(worker, env=env, cwd=common.REPO, check=True, capture_output=True)
            sizes: Counter[str] = Counter()
            counts: Counter[str] = Counter()
            for key in client.scan_iter(count=1000):
                kind = key.decode().split(":")[0] + ":" + key.decode().split(":")[1] if b":" in key else key.decode()
                sizes[kind] += int(client.memory_usage(key, samples=0) or 0)
                counts[kind] += 1
            waiting = client.llen("rq:queue:kayle")
    per_event = sum(sizes.values()) / max(accepted, 1)
    print(f"sent {sent} deliveries ({accepted} unique events accepted)")
    print(f"receiver RSS: {started_mb:.1f} MB at start, {rss:.1f} MB after (target < 100 MB)")
    print(f"after the worker: {waiting} jobs waiting; keys left by kind (count, MEMORY USAGE total):")
    for kind in sorted(sizes):
        print(f"  {kind:<20} {counts[kind]:7d} keys  {sizes[kind]:10d} bytes")
    print(f"Redis memory per done event: {per_event:.0f} bytes (target < 200 bytes)")
    common.emit("footprint", {"rss_mb_start": started_mb, "rss_mb_after": rss, "sent": sent, "accepted": accepted,
                              "bytes_per_done_event": per_event, "by_kind": dict(sizes)})


if __name__ == "__main__":
    main()
