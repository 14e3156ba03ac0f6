"""Real processes: free ports, ``kayle-webhooks`` commands, waiting on conditions, process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.vectors import REPO

#: How long a test waits for a condition before it fails: generous, so a busy machine does not fail the suite.
PATIENCE = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(*args: str) -> list[str]:
    """``kayle-webhooks ARGS`` through this interpreter's environment."""
    return [sys.executable, "-m", "kayle_webhooks", *args]


def subprocess_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """This process's environment without its ``KAYLE_*`` variables, plus ``base`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAYLE_")}
    env.update(base)
    env.update(extra)
    return env


def wait_until(condition: Callable[[], object], what: str, timeout: float = PATIENCE, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def wait_for_http(url: str, timeout: float = PATIENCE, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers (anything under 500), or ``process`` exits."""

    def answers() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            return httpx.get(url, timeout=5).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(answers, f"{url} answering", timeout)


@contextmanager
def running(
    argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = REPO, stdout_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real subprocess in a process group of its own, output captured to ``log_path`` (its stdout to
    ``stdout_path`` if given); on exit it is terminated, and its whole group killed if it does not stop."""
    with log_path.open("ab") as log, (stdout_path or Path(os.devnull)).open("ab") as out:
        process = subprocess.Popen(
            argv, env=dict(env), stdout=out if stdout_path else log, stderr=log if stdout_path else subprocess.STDOUT,
            cwd=cwd, start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)


@dataclass(frozen=True)
class Receiver:
    """A running ``kayle-webhooks serve``: its webhook and admin listeners and its log."""

    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextmanager
def serving(
    env: Mapping[str, str], log_path: Path, stdout_path: Path | None = None, until: str = "/readyz", **extra: str
) -> Iterator[Receiver]:
    """``kayle-webhooks serve`` with ``env`` (and ``extra``) on a free port, once its admin ``until`` path
    answers (``/healthz`` when Redis may be down); its stdout to ``stdout_path`` if given."""
    environment = subprocess_env(env, **extra)
    admin_port = int(environment.get("KAYLE_ADMIN_PORT") or free_port())
    environment["KAYLE_ADMIN_PORT"] = str(admin_port)
    port = free_port()
    with running(command("serve", "--port", str(port)), environment, log_path, stdout_path=stdout_path) as process:
        receiver = Receiver(process, port, admin_port, log_path)
        wait_for_http(f"{receiver.admin_url}{until}", process=process)
        yield receiver


def stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind (work horses, uvicorn workers)
    process.wait()


def start_group(argv: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A process leading a process group of its own (as a container's main process is)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, env=dict(env), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table
