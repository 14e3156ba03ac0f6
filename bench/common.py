"""What every benchmark shares: a private redis-server, a key and secret, pre-generated
deliveries (built by the project's own sender code), server processes, and a little statistics.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
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
from redis.asyncio import Redis as AsyncRedis

from kayle_webhooks.keys import DEFAULT_BITS, generate, pem
from kayle_webhooks.testing import SignedRequest
from receiver import jwe
from receiver.envelope import read_envelope
from receiver.intake import Intake
from receiver.jobs import JobArgs
from receiver.keyring import load_keyring
from receiver.machine import usable_cpus
from receiver.seal import Sealer
from receiver.settings import Settings
from tests.helpers.processes import command as command
from tests.helpers.processes import free_port as free_port
from tests.helpers.processes import running
from tests.helpers.redis import RedisServer as RedisServer
from tests.helpers.sending import make_events as make_events

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


#: The key sizes every benchmark of a key-dependent figure reports: RSA-2048, and the default of ``keys new``.
KEY_SIZES = tuple(sorted({2048, DEFAULT_BITS}))


@dataclass(frozen=True)
class Keys:
    directory: Path
    public: rsa.RSAPublicKey
    bits: int

    @property
    def file(self) -> Path:
        return self.directory / f"{KID}.pem"


def make_keys(workdir: Path, bits: int = DEFAULT_BITS) -> Keys:
    """A key directory of its own for an RSA key of ``bits`` (the default: what ``keys new`` makes)."""
    directory = workdir / f"keys-{bits}"
    directory.mkdir(parents=True, exist_ok=True)
    private = generate(bits)
    (directory / f"{KID}.pem").write_bytes(pem(private))
    (directory / f"{KID}.pem").chmod(0o600)
    return Keys(directory, private.public_key(), bits)


def rsa_ms(keys: Keys, times: int = 20) -> float:
    """Milliseconds one RSA-OAEP-256 private-key operation with ``keys`` takes here (the median of ``times``)."""
    key = load_keyring(keys.directory)[KID]
    parsed = jwe.parse(jwe.encrypt(b"{}", keys.public, KID))
    jwe.unwrap_key(parsed, {KID: key})  # the first one sets OpenSSL's per-key state up
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        jwe.unwrap_key(parsed, {KID: key})
        spent.append((time.perf_counter() - started) * 1000)
    return median(spent)


def describe(keys: Keys) -> str:
    return f"RSA-{keys.bits} (one private-key operation: {rsa_ms(keys):.2f} ms here)"


def make_deliveries(count: int, keys: Keys) -> list[SignedRequest]:
    """``count`` unique, validly signed deliveries (signed now), the known types in turn."""
    return [request for _, request in make_events(count, keys.public, KID, SECRET)]


def sealed_jobs(deliveries: Sequence[SignedRequest], keys: Keys) -> list[JobArgs]:
    """The job the receiver stores for each delivery (the JWE as received, its content key sealed for the worker),
    made with the receiver's own code: one RSA decryption each."""
    keyring = load_keyring(keys.directory)
    sealer = Sealer(keyring)
    jobs = []
    for delivery in deliveries:
        parsed = jwe.parse(delivery.body)
        cek = jwe.unwrap_key(parsed, keyring)
        envelope = read_envelope(jwe.open_content(parsed, cek))
        jobs.append(JobArgs(
            delivery.body.decode("ascii"), envelope.event_id, envelope.type, parsed.kid,
            delivery.headers["X-Kayle-Delivery-Id"], time.time(),
            seal=sealer.seal(cek, parsed.kid, envelope.event_id, parsed.protected),
        ))
    return jobs


def settings_of(env: dict[str, str]) -> Settings:
    """The receiver's settings from the ``KAYLE_*`` variables of ``env``."""
    return Settings(**{  # type: ignore[arg-type]
        name.removeprefix("KAYLE_").lower(): value for name, value in env.items() if name.startswith("KAYLE_")
    })


def store(jobs: Sequence[JobArgs], env: dict[str, str], batch: int = 500) -> None:
    """Write ``jobs`` through the receiver's intake (marker and job in one script call each), ``batch`` at a time
    in flight, as concurrent requests would."""
    settings = settings_of(env)

    async def store_all() -> None:
        client = AsyncRedis.from_url(settings.redis_url)
        intake = Intake(client, settings)
        for start in range(0, len(jobs), batch):
            outcomes = await asyncio.gather(*(intake.store(job) for job in jobs[start:start + batch]))
            if any(outcome != "accepted" for outcome in outcomes):
                raise RuntimeError("intake answered duplicate for a new event")
        await client.aclose()

    asyncio.run(store_all())


def receiver_env(keys: Keys, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAYLE_")}
    env.update(
        KAYLE_SIGNING_SECRETS=SECRET,
        KAYLE_KEY_DIR=str(keys.directory),
        KAYLE_REDIS_URL=redis_url,
        KAYLE_PATH=PATH,
        KAYLE_TOLERANCE_SECONDS="3600",
        REFERENCE_KEY_FILE=str(keys.file),  # the reference pipeline's (bench/reference_receiver.py)
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


@contextmanager
def server(argv: Sequence[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until ``/healthz`` (or any path) answers on ``port``; terminate it on exit."""
    with running(list(argv), env, log) as process:
        wait_for_port(port, process)
        yield process


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
    """``kayle-webhooks serve`` with its default process count (one per usable CPU), its admin listener on a free
    port."""
    return command("serve", "--port", str(port), "--admin-port", str(free_port()))


def default_processes() -> int:
    """How many processes ``serve`` runs without ``--workers`` on this machine."""
    return usable_cpus()


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
    """User + system CPU time used so far by process ``pid`` and its live children (uvicorn's processes)."""
    total = 0.0
    for each in (pid, *children(pid)):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def server_processes(pid: int) -> list[int]:
    """The processes that serve requests: the ones uvicorn spawned when it runs several (not multiprocessing's
    resource tracker, its other child), else ``pid`` itself."""
    spawned = [child for child in children(pid) if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]
    return spawned or [pid]


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


def check(what: str, value: float, target: str, met: bool) -> dict[str, object]:
    """One target of a benchmark, as the summary of ``bench/run`` lists it."""
    return {"what": what, "value": round(value, 3), "target": target, "met": met}


def emit(name: str, figures: dict[str, object], checks: Sequence[dict[str, object]] = ()) -> None:
    """One machine-readable line per benchmark, after the human-readable report; ``checks`` are its targets."""
    print(f"RESULT {name} {json.dumps({**figures, 'checks': list(checks)}, sort_keys=True)}", flush=True)
