"""``kayle-webhooks demo``: the whole service on this machine, with a throwaway key and secret.

It starts a receiver and a worker, sends one real signed and encrypted delivery of each event
type, shows what the example handler recorded (ids, types, outcomes, claim keys: never claim
values), then runs until it is stopped (Ctrl-C, SIGTERM or SIGHUP), which stops everything it started.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from types import FrameType

import httpx
from redis.exceptions import RedisError

from kayle_webhooks import keys
from kayle_webhooks.testing import build_request, sample_payload
from receiver.connections import display_url, sync_redis
from receiver.keyring import load_private_key
from receiver.settings import ConfigError, Settings, read_settings
from workers.models import KNOWN_EVENT_TYPES

DEMO_KID = "demo-key"
DEMO_QUEUE = "kayle-demo"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """The demo was asked to stop by a signal."""


def run_demo(port: int, directory: Path) -> None:
    base = directory.resolve()
    env = _prepare(base)
    _require_redis(read_settings())
    url = f"http://127.0.0.1:{port}"
    admin_port = _free_port()  # not the default: two demos, or a demo and a service, must not collide
    path = read_settings().path
    with _stopped_by_signals(), _started(base, env, port, admin_port) as processes:
        try:
            _wait_ready(f"http://127.0.0.1:{admin_port}", processes)
            print(f"receiver on {url}{path}, a worker with the handler plugins of this environment")
            print(f"logs: {base / 'receiver.log'}, {base / 'worker.log'}\n")
            sent = _send_one_of_each(url + path, base)
            print("\nwhat the example handler recorded (claim values never leave the handler):")
            shown = _show_records(Path(env["KAYLE_EXAMPLE_DB"]), set(), wait_for=sent)
            print("\nsend more from another terminal:")
            print(f"  {_send_more_command(base, url + path)}")
            print("\nrunning; new events appear below. Ctrl-C stops the receiver and the worker.")
            while all(p.poll() is None for p in processes):
                time.sleep(1)
                shown = _show_records(Path(env["KAYLE_EXAMPLE_DB"]), shown)
            print(f"a demo process stopped unexpectedly: see the logs in {base}", file=sys.stderr)
        except Stopped:
            pass
    print("\nstopped the receiver and the worker")


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Stopped`, also where SIGINT was ignored (a background job)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare(base: Path) -> dict[str, str]:
    """A throwaway key and secret in ``base`` (kept between runs), and the environment the demo runs with."""
    key_dir = base / "keys"
    if not (key_dir / f"{DEMO_KID}.pem").exists():
        keys.write_key(key_dir, DEMO_KID, 2048)
    secret_file = base / "signing-secret"
    if not secret_file.exists():
        with os.fdopen(os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write("whsec_" + secrets.token_urlsafe(24) + "\n")
    (base / ".gitignore").write_text("*\n")
    env = {
        **os.environ,
        "KAYLE_KEY_DIR": str(key_dir),
        "KAYLE_SIGNING_SECRETS": "",
        "KAYLE_SIGNING_SECRETS_FILE": str(secret_file),
        "KAYLE_REDIS_URL": read_settings().redis_url,
        "KAYLE_QUEUE": DEMO_QUEUE,
        "KAYLE_EXAMPLE_DB": str(base / "events.sqlite3"),
        "KAYLE_LOG_FORMAT": "text",
    }
    os.environ.update(env)  # this process sends with the same key and secret
    return env


def _require_redis(settings: Settings) -> None:
    try:
        sync_redis(settings, socket_connect_timeout=2).ping()
    except (RedisError, OSError):
        raise ConfigError(
            f"KAYLE_REDIS_URL: no Redis answers at {display_url(settings.redis_url)}; start one (scripts/demo does)"
        ) from None


@contextmanager
def _started(
    base: Path, env: dict[str, str], port: int, admin_port: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    program = [sys.executable, "-m", "kayle_webhooks"]
    commands = {
        "receiver": [*program, "serve", "--port", str(port), "--admin-port", str(admin_port), "--workers", "1"],
        "worker": [*program, "worker"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, argv in commands.items():
            with (base / f"{name}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_stop_with_parent)
                )
        yield processes
    finally:
        with suppress(Stopped):  # a second signal while stopping: keep stopping
            _stop(processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_with_parent() -> None:
    """Linux: the child gets SIGTERM if the demo dies without stopping it (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(admin_url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise ConfigError("KAYLE_*: a demo process exited at start-up; its log in the demo directory says why")
        with suppress(httpx.HTTPError):
            if httpx.get(admin_url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ConfigError("KAYLE_*: the demo receiver did not become ready within 60 s")


def _send_one_of_each(url: str, base: Path) -> set[str]:
    secret = (base / "signing-secret").read_text().strip()
    public = load_private_key(base / "keys" / f"{DEMO_KID}.pem").public_key()
    sent = set()
    with httpx.Client(timeout=15) as http:
        for event_type in KNOWN_EVENT_TYPES:
            payload = sample_payload(event_type)
            request = build_request(payload, secret, public, DEMO_KID)
            answer = http.post(url, content=request.body, headers=request.headers)
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
    deadline = time.monotonic() + 60
    while wait_for and not wait_for <= {row["event_id"] for row in _rows(database)}:
        if time.monotonic() > deadline:
            print("  (the worker has not recorded every event yet: see worker.log)")
            break
        time.sleep(0.2)
    for row in _rows(database):
        if row["event_id"] in shown:
            continue
        shown.add(row["event_id"])
        claim_keys = row["claim_keys"] if "claim_keys" in row.keys() else None  # noqa: SIM118 - sqlite3.Row
        print(f"  {row['type']:<34} {row['event_id'][:20]}…  session {row['session_id'][:16]}…  {row['outcome']}")
        if claim_keys:
            print(f"      claim keys: {claim_keys}")
    return shown


def _send_more_command(base: Path, url: str) -> str:
    script = Path(sys.executable).with_name("kayle-webhooks")
    program = shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m kayle_webhooks"
    return (
        f"KAYLE_KEY_DIR={shlex.quote(str(base / 'keys'))} KAYLE_SIGNING_SECRETS= "
        f"KAYLE_SIGNING_SECRETS_FILE={shlex.quote(str(base / 'signing-secret'))} "
        f"{program} send-test --url {url} --count 1"
    )
