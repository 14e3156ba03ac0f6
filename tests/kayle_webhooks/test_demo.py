"""The demo: a working service with real deliveries, and nothing left running however it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue, Worker

from tests.helpers.plugins import EXAMPLE_MODULE, EXAMPLE_PLUGIN
from tests.helpers.privacy import leaked_claims, sample_claim_values
from tests.helpers.processes import PATIENCE, command, free_port, process_table, stop_group, wait_until
from tests.helpers.vectors import REPO

pytestmark = pytest.mark.slow


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = PATIENCE) -> str:
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"no {marker!r} in demo output:\n{seen}")
        seen += process.stdout.readline()
    return seen


def demo_environment(env: dict[str, str]) -> dict[str, str]:
    environment = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(EXAMPLE_PLUGIN)}
    environment.update(KAYLE_HANDLERS=EXAMPLE_MODULE, KAYLE_LOAD_ENTRY_POINTS="false")
    environment.pop("KAYLE_KEY_DIR")
    return environment


def start(argv: list[str], env: dict[str, str], cwd: Path, before: Callable[[], None] | None = None):  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        start_new_session=True, preexec_fn=before,
    )


def session_members(session: int) -> list[int]:
    """The processes still alive in the process group the demo was started in."""
    return [pid for pid, (_, group) in process_table().items() if group == session and _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_stopped_cleanly(process: subprocess.Popen[str], port: int, client: redis.Redis) -> str:
    remaining, _ = process.communicate(timeout=PATIENCE)
    assert "stopped the receiver and the worker" in remaining, remaining
    wait_until(lambda: not session_members(process.pid), "every process of the demo gone")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert Worker.all(queue=Queue("kayle-demo", connection=client)) == []
    return remaining


def test_demo_runs_sends_shows_and_stops_cleanly(env, tmp_path: Path, redis_client: redis.Redis) -> None:
    port = free_port()
    environment = demo_environment(env)
    process = start(command("demo", "--port", str(port), "--dir", str(tmp_path / "demo")), environment, tmp_path)
    try:
        output = read_until(process, "Ctrl-C stops")
        for event_type in ("succeeded", "failed", "expired", "cancelled"):
            assert f"sent verification.session.{event_type}" in output
            assert f"  verification.session.{event_type} " in output
        assert output.count("-> 200 accepted") == 4
        assert "failed: liveness_failed" in output
        claim_keys = next(line for line in output.splitlines() if "claim keys:" in line)
        assert "date_of_birth" in claim_keys and "family_name" in claim_keys and "given_names" in claim_keys
        assert stat_mode(tmp_path / "demo" / "keys" / "demo-key.pem") == 0o600

        send_more = next(line for line in output.splitlines() if " send-test --url " in line).strip()
        more = subprocess.run(send_more, shell=True, env=environment, capture_output=True, text=True, timeout=PATIENCE)  # noqa: S602 - as a user pastes it
        assert more.returncode == 0, more.stdout + more.stderr
        read_until(process, "verification.session.cancelled")  # a new event shows up while running
        process.send_signal(signal.SIGINT)
        remaining = assert_stopped_cleanly(process, port, redis_client)
    finally:
        stop_group(process)  # type: ignore[arg-type]
    assert process.returncode == 0, remaining
    logs = b"".join(p.read_bytes() for p in (tmp_path / "demo").glob("*.log"))
    assert leaked_claims(output + remaining, sample_claim_values()) == []
    assert leaked_claims(logs, sample_claim_values()) == []
    assert b"kayle_example_plugin.handlers.record" in logs


@pytest.mark.parametrize("how", ["SIGTERM to scripts/demo", "SIGHUP", "SIGINT while SIGINT is ignored"])
def test_the_demo_stops_everything_it_started_however_it_is_stopped(
    how: str, env, tmp_path: Path, redis_client: redis.Redis
) -> None:
    port = free_port()
    environment = demo_environment(env)
    demo_args = ["--port", str(port), "--dir", str(tmp_path / "demo")]
    if how.startswith("SIGTERM"):  # the README's command, killed as `kill <pid>` does
        process = start(["bash", str(REPO / "scripts" / "demo"), *demo_args], environment, tmp_path)
        sig = signal.SIGTERM
    elif how == "SIGHUP":  # its terminal closed
        process = start(command("demo", *demo_args), environment, tmp_path)
        sig = signal.SIGHUP
    else:  # started in the background by a shell, which leaves SIGINT ignored
        process = start(command("demo", *demo_args), environment, tmp_path, ignore_sigint)
        sig = signal.SIGINT
    try:
        read_until(process, "Ctrl-C stops")
        process.send_signal(sig)
        assert_stopped_cleanly(process, port, redis_client)
    finally:
        stop_group(process)  # type: ignore[arg-type]


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
