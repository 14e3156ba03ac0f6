"""``kayle-webhooks demo``: the whole service on this machine, with a throwaway key and secret.

It starts a receiver and a worker (with the installed plugins, such as the
example plugin), sends one real signed and encrypted delivery of each event
type, shows what the example handler recorded (ids, types, outcomes, claim
keys: never claim values), then keeps running until Ctrl-C, which stops
everything it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import httpx
from redis import Redis
from redis.exceptions import RedisError

from receiver import keyring
from receiver.sender import KNOWN_TYPES, build_delivery, sample_payload
from receiver.settings import ConfigError, read_settings

DEMO_KID = "demo-key"
DEMO_QUEUE = "kayle-demo"


def demo_command(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    env = _prepare(base)
    _require_redis(env["KAYLE_REDIS_URL"])
    url = f"http://127.0.0.1:{args.port}"
    with _started(base, env, args.port) as processes:
        _wait_ready(url, processes)
        print(f"receiver on {url}{read_settings().path}, a worker with your installed handler plugins")
        print(f"logs: {base / 'receiver.log'}, {base / 'worker.log'}\n")
        sent = _send_one_of_each(url + read_settings().path, base)
        print("\nwhat the example handler recorded (claim values never leave the handler):")
        shown = _show_records(Path(env["KAYLE_EXAMPLE_DB"]), set(), wait_for=sent)
        print("\nsend more from another terminal:")
        print(f"  {_send_more_command(base, url + read_settings().path)}")
        print("\nrunning; new events appear below. Ctrl-C stops the receiver and the worker.")
        with suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in processes):
                time.sleep(1)
                shown = _show_records(Path(env["KAYLE_EXAMPLE_DB"]), shown)
        if any(p.poll() not in (None, 0, -signal.SIGINT, -signal.SIGTERM) for p in processes):
            print(f"a demo process stopped unexpectedly: see the logs in {base}", file=sys.stderr)
    print("\nstopped the receiver and the worker")
    return 0


def _prepare(base: Path) -> dict[str, str]:
    """A throwaway key and secret in ``base`` (kept between runs), and the environment the demo runs with."""
    keys = base / "keys"
    if not (keys / f"{DEMO_KID}.pem").exists():
        keyring.write_key(keys, DEMO_KID, 2048)
    secret_file = base / "signing-secret"
    if not secret_file.exists():
        with os.fdopen(os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write("whsec_" + secrets.token_urlsafe(24) + "\n")
    (base / ".gitignore").write_text("*\n")
    settings = read_settings()
    env = {
        **os.environ,
        "KAYLE_KEY_DIR": str(keys),
        "KAYLE_SIGNING_SECRETS": "",
        "KAYLE_SIGNING_SECRETS_FILE": str(secret_file),
        "KAYLE_REDIS_URL": settings.redis_url,
        "KAYLE_QUEUE": DEMO_QUEUE,
        "KAYLE_EXAMPLE_DB": str(base / "events.sqlite3"),
        "KAYLE_LOG_FORMAT": "text",
    }
    os.environ.update(env)  # this process sends with the same key and secret
    return env


def _require_redis(url: str) -> None:
    try:
        Redis.from_url(url, socket_connect_timeout=2).ping()
    except RedisError:
        raise ConfigError(f"KAYLE_REDIS_URL: no Redis answers at {url}; start one (scripts/demo does)") from None


@contextmanager
def _started(base: Path, env: dict[str, str], port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    program = [sys.executable, "-m", "workers.cli"]
    commands = {
        "receiver": [*program, "serve", "--port", str(port)],
        "worker": [*program, "worker"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, argv in commands.items():
            log = (base / f"{name}.log").open("ab")
            processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise ConfigError("KAYLE_*: a demo process exited at start-up; its log in the demo directory says why")
        with suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise ConfigError("KAYLE_*: the demo receiver did not become ready within 30 s")


def _send_one_of_each(url: str, base: Path) -> set[str]:
    config_secret = (base / "signing-secret").read_text().strip()
    public = keyring.load_private_key(base / "keys" / f"{DEMO_KID}.pem").public_key()
    sent = set()
    with httpx.Client(timeout=15) as http:
        for event_type in KNOWN_TYPES:
            payload = sample_payload(event_type)
            delivery = build_delivery(payload, config_secret, public, DEMO_KID)
            answer = http.post(url, content=delivery.body, headers=delivery.headers)
            print(f"sent {event_type:<32} -> {answer.status_code} {answer.json().get('status', answer.text)}")
            sent.add(payload["metadata"]["event_id"])
    return sent


def _rows(database: Path) -> list[sqlite3.Row]:
    if not database.exists():
        return []
    with closing(sqlite3.connect(database, timeout=5)) as connection:
        connection.row_factory = sqlite3.Row
        try:
            return list(connection.execute("SELECT * FROM events ORDER BY received_at"))
        except sqlite3.OperationalError:
            return []


def _show_records(database: Path, shown: set[str], wait_for: set[str] | None = None) -> set[str]:
    deadline = time.monotonic() + 30
    while wait_for and not wait_for <= {row["event_id"] for row in _rows(database)}:
        if time.monotonic() > deadline:
            print("  (the worker has not recorded every event yet: see worker.log)")
            break
        time.sleep(0.2)
    for row in _rows(database):
        if row["event_id"] in shown:
            continue
        shown.add(row["event_id"])
        keys = row["claim_keys"] if "claim_keys" in row.keys() else None  # noqa: SIM118 - sqlite3.Row
        print(f"  {row['type']:<34} {row['event_id'][:20]}…  session {row['session_id'][:16]}…  {row['outcome']}")
        if keys:
            print(f"      claim keys: {keys}")
    return shown


def _send_more_command(base: Path, url: str) -> str:
    script = Path(sys.executable).with_name("kayle-webhooks")
    program = shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m workers.cli"
    return (
        f"KAYLE_KEY_DIR={shlex.quote(str(base / 'keys'))} KAYLE_SIGNING_SECRETS= "
        f"KAYLE_SIGNING_SECRETS_FILE={shlex.quote(str(base / 'signing-secret'))} "
        f"{program} send-test --url {url} --count 1"
    )
