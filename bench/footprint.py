"""Footprint: Redis memory per handled event (the dedup markers), and the receiver's RSS per process.

Redis: ``used_memory`` of a private redis-server (no AOF, so that no transient buffer counts) before and after
``--events`` events (default 100,000) went through the receiver's own intake (``receiver.intake.Intake``: marker
and job in one script call each) and were handled. A real ``kayle-webhooks worker --burst --simple`` handles
the first ``--handled-by-worker`` of them (their jobs carry real, sealed JWEs); a worker handles a thousand
events in seconds and the rest would take minutes, so the rest's jobs are then deleted as RQ deletes a job
that succeeded with result_ttl=0 (its hash, its queue entry), and the keys left are listed by kind to show
that a handled event leaves only its marker. Prints bytes per event and what the dedup window (default
10 days) holds at 100 and 1,000 events/s. Target: at most 48 bytes per event.

Receiver: RSS of each ``kayle-webhooks serve`` process (its default process count) after ``--deliveries``
unique deliveries (16 keep-alive connections, each sent once). Target: under 100 MB per process.

    python -m bench.footprint [--events 100000] [--deliveries 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench import common, openloop
from kayle_webhooks.testing import sample_payload
from receiver import b64url, jwe
from receiver.intake import intake_script
from receiver.jobs import JobArgs, JobTemplate, job_id
from receiver.keyring import load_keyring
from receiver.seal import Sealer
from receiver.settings import Settings
from workers.models import KNOWN_EVENT_TYPES

BYTES_TARGET = 48
RSS_TARGET_MB = 100
RATES = (100, 1000)


def cheap_sealed_jobs(count: int, keys: common.Keys) -> list[JobArgs]:
    """``count`` jobs as the receiver stores them (a JWE to this key, its content key sealed), fast: one content
    key, RSA-encrypted once, serves them all (each JWE has its own IV; the worker opens the seal, not the RSA)."""
    keyring = load_keyring(keys.directory)
    sealer = Sealer(keyring)
    template = jwe.parse(jwe.encrypt(b"{}", keys.public, common.KID))
    cek = jwe.unwrap_key(template, keyring)
    cipher = AESGCM(cek)
    header, encrypted_key = template.protected, b64url.encode(template.encrypted_key)
    samples = [sample_payload(event_type) for event_type in KNOWN_EVENT_TYPES]
    jobs = []
    for index in range(count):
        payload = samples[index % len(samples)]
        event_id = "evt_" + secrets.token_hex(32)
        payload["metadata"]["event_id"] = event_id
        plaintext = json.dumps(payload, separators=(",", ":")).encode()
        iv = secrets.token_bytes(jwe.IV_BYTES)
        sealed = cipher.encrypt(iv, plaintext, header.encode("ascii"))
        parts = (header, encrypted_key, b64url.encode(iv), b64url.encode(sealed[: -jwe.TAG_BYTES]),
                 b64url.encode(sealed[-jwe.TAG_BYTES :]))
        jobs.append(JobArgs(".".join(parts), event_id, str(payload["type"]), common.KID, None, time.time(),
                            seal=sealer.seal(cek, common.KID, event_id, header)))
    return jobs


def used_memory(redis: common.RedisServer) -> int:
    return int(redis.client().info("memory")["used_memory"])


def markers(args: argparse.Namespace, workdir: Path, keys: common.Keys) -> tuple[dict[str, object], float]:
    """The figures, and the bytes per handled event."""
    started = time.monotonic()
    jobs = cheap_sealed_jobs(args.events, keys)
    print(f"built {len(jobs)} sealed jobs in {time.monotonic() - started:.1f} s")
    sample = args.handled_by_worker
    with common.private_redis(workdir / "markers", appendonly=False) as redis:
        env = common.receiver_env(keys, redis.url, KAYLE_HANDLERS="bench.noop_handler", KAYLE_LOAD_ENTRY_POINTS="false",
                                  KAYLE_LOG_LEVEL="WARNING", KAYLE_MAX_PENDING_EVENTS="0",
                                  KAYLE_DEDUP_TTL_SECONDS=str(args.window))
        settings = common.settings_of(env)
        client = redis.client()
        # What is there whatever the number of events goes into "before": the intake script, and what a worker
        # leaves (its scripts, its registration), by a burst over the empty queue.
        client.script_load(intake_script(settings, JobTemplate(settings)))
        worker = common.command("worker", "--burst", "--simple")
        subprocess.run(worker, env=env, cwd=common.REPO, check=True, capture_output=True)
        before = settled_memory(redis)
        started = time.monotonic()
        common.store(jobs[:sample], env)
        subprocess.run(worker, env=env, cwd=common.REPO, check=True, capture_output=True)
        handled_by_worker = time.monotonic() - started
        left = int(client.exists(*(f"rq:job:{job_id(job.event_id)}" for job in jobs[:sample])))
        if left:
            raise RuntimeError(f"the worker left {left} of its {sample} jobs (failed?)")
        started = time.monotonic()
        common.store(jobs[sample:], env)
        stored = time.monotonic() - started
        delete_done_jobs(redis, settings, jobs[sample:])
        after = settled_memory(redis)
        sizes, counts = keys_by_kind(redis)
        stats = client.memory_stats()
    per_event = (after - before) / args.events
    print(f"{sample} events through intake and a real burst worker in {handled_by_worker:.1f} s; the other "
          f"{args.events - sample} through intake in {stored:.1f} s, then their jobs deleted as RQ deletes a job done")
    print("keys left by kind (count, MEMORY USAGE total):")
    for kind in sorted(sizes):
        print(f"  {kind:<24} {counts[kind]:7d} keys  {sizes[kind]:10d} bytes")
    db = stats["db.0"]
    print(f"after: {stats['keys.count']} keys, dataset {stats['dataset.bytes']} bytes, overhead "
          f"{stats['overhead.total']} bytes (key table {db['overhead.hashtable.main']}, expiry table "
          f"{db['overhead.hashtable.expires']}, Lua {stats['lua.caches']}, clients {stats['clients.normal']})")
    print(f"used_memory: {before} bytes before, {after} after, {args.events} events handled: "
          f"{per_event:.1f} bytes per handled event (target <= {BYTES_TARGET})")
    projections = {}
    for rate in RATES:
        events = rate * args.window
        projections[rate] = events * per_event
        print(f"  at {rate} events/s the {args.window / 86400:g}-day window holds {events / 1e6:.1f} M events: "
              f"{events * per_event / 2**30:.2f} GiB")
    return {"used_memory_before": before, "used_memory_after": after, "events": args.events,
            "bytes_per_handled_event": per_event, "window_seconds": args.window,
            "projected_bytes": projections, "keys_by_kind": dict(sizes)}, per_event


def settled_memory(redis: common.RedisServer, timeout: float = 30) -> int:
    """``used_memory`` once Redis has shrunk its key table after the deletions (its cron does, a step at a time):
    the table sized for 100,000 jobs at once is no marker's cost."""
    deadline = time.monotonic() + timeout
    last = used_memory(redis)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = used_memory(redis)
        if now >= last:
            return now
        last = now
    return last


def delete_done_jobs(redis: common.RedisServer, settings: Settings, jobs: list[JobArgs]) -> None:
    """What a worker does to a job that succeeded with result_ttl=0: delete its hash; pop it from the queue."""
    client = redis.client()
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(jobs), 1000):
            pipe.delete(*(f"rq:job:{job_id(job.event_id)}" for job in jobs[start:start + 1000]))
        pipe.delete(f"rq:queue:{settings.queue}")
        pipe.execute()


def keys_by_kind(redis: common.RedisServer) -> tuple[Counter[str], Counter[str]]:
    client = redis.client()
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        parts = key.decode().split(":")
        kind = ":".join(parts[:2]) + (":<bucket>" if parts[:2] == ["kayle", "seen"] and len(parts) > 3 else "")
        sizes[kind] += int(client.memory_usage(key, samples=0) or 0)
        counts[kind] += 1
    return sizes, counts


def rss(args: argparse.Namespace, workdir: Path, keys: common.Keys) -> tuple[dict[str, object], float]:
    """The figures, and the largest RSS of a serving process after the deliveries (MB)."""
    deliveries = common.make_deliveries(args.deliveries, keys)
    with common.private_redis(workdir / "rss") as redis:
        port = common.free_port()
        env = common.receiver_env(keys, redis.url)
        with common.server(common.serve_argv(port), env, port, workdir / "serve.log") as process:
            pids = common.server_processes(process.pid)
            start_mb = [common.rss_mb(pid) for pid in pids]
            raw = [openloop.raw_request(d, "127.0.0.1", port, common.PATH) for d in deliveries]
            outcome = asyncio.run(openloop.closed_loop("127.0.0.1", port, raw, 16))
            after_mb = [common.rss_mb(pid) for pid in pids]
            supervisor_mb = common.rss_mb(process.pid) if pids != [process.pid] else 0.0
    print(f"sent {sum(outcome.statuses.values())} deliveries (answers {outcome.statuses}) to {len(pids)} receiver "
          f"processes (RSA-{keys.bits})")
    for pid, start, after in zip(pids, start_mb, after_mb, strict=True):
        print(f"  process {pid}: RSS {start:.1f} MB at start, {after:.1f} MB after (target < {RSS_TARGET_MB} MB)")
    if supervisor_mb:
        print(f"  uvicorn's supervisor: {supervisor_mb:.1f} MB")
    return {"deliveries": args.deliveries, "processes": len(pids), "rss_mb_start": start_mb,
            "rss_mb_after": after_mb, "supervisor_mb": supervisor_mb}, max(after_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--handled-by-worker", type=int, default=1000)
    parser.add_argument("--deliveries", type=int, default=20_000)
    window = Settings.model_fields["dedup_ttl_seconds"].default
    parser.add_argument("--window", type=int, default=window, help="dedup window, s (KAYLE_DEDUP_TTL_SECONDS)")
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    with tempfile.TemporaryDirectory(prefix="kayle-bench-") as tmp:
        workdir = Path(tmp)
        redis_figures, per_event = markers(args, workdir, common.make_keys(workdir, 2048))
        rss_figures, worst_mb = rss(args, workdir, common.make_keys(workdir, 2048))
    common.emit("footprint", {"redis": redis_figures, "receiver": rss_figures}, [
        common.check("Redis bytes per handled event", per_event, f"<= {BYTES_TARGET} B", per_event <= BYTES_TARGET),
        common.check("receiver RSS per process, MB", worst_mb, f"< {RSS_TARGET_MB} MB", worst_mb < RSS_TARGET_MB),
    ])


if __name__ == "__main__":
    main()
