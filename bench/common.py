"""What every benchmark shares: a private redis-server, a key and secret, pre-generated
deliveries (built by the project's own sender code), server processes, and a little statistics.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from kayle_webhooks.keys import generate, pem
from kayle_webhooks.testing import SignedRequest
from tests.helpers.processes import command, free_port
from tests.helpers.redis import RedisServer
from tests.helpers.sending import make_events

REPO = Path(__file__).resolve().parents[1]
KID = "bench-key"
SECRET = "whsec_bench_" + "s3cr3t" * 6
PATH = "/webhooks/kayle"


@contextmanager
def private_redis(workdir: Path, appendonly: bool = True) -> Iterator[RedisServer]:
    """A redis-server of our own (AOF ``everysec`` by default, as in production), stopped on exit."""
    options = ("--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec", "--save", "")
    server = RedisServer(workdir / "redis", options=options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Keys:
    directory: Path
    public: rsa.RSAPublicKey


def make_keys(workdir: Path, bits: int = 2048) -> Keys:
    directory = workdir / "keys"
    directory.mkdir(parents=True, exist_ok=True)
    private = generate(bits)
    (directory / f"{KID}.pem").write_bytes(pem(private))
    (directory / f"{KID}.pem").chmod(0o600)
    return Keys(directory, private.public_key())


def make_deliveries(count: int, keys: Keys) -> list[SignedRequest]:
    """``count`` unique, validly signed deliveries (signed now), the known types in turn."""
    return [request for _, request in make_events(count, keys.public, KID, SECRET)]


def receiver_env(keys: Keys, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAYLE_")}
    env.update(
        KAYLE_SIGNING_SECRETS=SECRET,
        KAYLE_KEY_DIR=str(keys.directory),
        KAYLE_REDIS_URL=redis_url,
        KAYLE_PATH=PATH,
        KAYLE_TOLERANCE_SECONDS="3600",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


@contextmanager
def server(argv: Sequence[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until ``/healthz`` (or any path) answers on ``port``; terminate it on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for_port(port, process)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on port {port} within {timeout} s")


def serve_argv(port: int) -> list[str]:
    """One receiver process (the figures are per process), its admin listener on a free port."""
    return command("serve", "--port", str(port), "--workers", "1", "--admin-port", str(free_port()))


def uvicorn_argv(app: str, port: int) -> list[str]:
    """How a developer runs a Starlette app: one uvicorn process (access log off, as in ours)."""
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((part.split("=", 1)[1] for part in redis_version if part.startswith("v=")), "?")
    return (
        f"{os.cpu_count()} x {cpu}{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; redis-server {version}"
    )


def require(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        sys.exit(f"{tool} is needed: {hint}")


def emit(name: str, figures: dict[str, object]) -> None:
    """One machine-readable line per benchmark, after the human-readable report."""
    print(f"RESULT {name} {json.dumps(figures, sort_keys=True)}", flush=True)
