"""``kayle-webhooks demo``: a working service with real deliveries, and nothing left running after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue, Worker

from tests.support import command, free_port, leaked_claims, sample_claim_values


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 90) -> str:
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"no {marker!r} in demo output:\n{seen}")
        seen += process.stdout.readline()
    return seen


def test_demo_runs_sends_shows_and_stops_cleanly(env, tmp_path: Path, redis_client: redis.Redis) -> None:
    port = free_port()
    environment = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    environment.pop("KAYLE_KEY_DIR")
    process = subprocess.Popen(
        command("demo", "--port", str(port), "--dir", str(tmp_path / "demo")),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
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
        more = subprocess.run(send_more, shell=True, env=environment, capture_output=True, text=True, timeout=60)  # noqa: S602 - as a user pastes it
        assert more.returncode == 0, more.stdout + more.stderr
        read_until(process, "verification.session.cancelled", timeout=30)  # a new event shows up while running
    finally:
        process.send_signal(signal.SIGINT)
        remaining, _ = process.communicate(timeout=60)
    assert process.returncode == 0, remaining
    assert "stopped the receiver and the worker" in remaining
    logs = b"".join(p.read_bytes() for p in (tmp_path / "demo").glob("*.log"))
    assert leaked_claims(output + remaining, sample_claim_values()) == []
    assert leaked_claims(logs, sample_claim_values()) == []
    assert b"kayle_example_plugin.handlers.record" in logs
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert Worker.all(queue=Queue("kayle-demo", connection=redis_client)) == []


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
