"""The admin listener of a real ``kayle-webhooks serve`` (default process count): /healthz, /readyz and
/metrics there, only the webhook and /healthz on the public port."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from receiver.machine import usable_cpus
from tests.helpers.processes import command, free_port, serving, subprocess_env
from tests.helpers.sending import PATH, sender
from tests.helpers.vectors import Fixture

pytestmark = pytest.mark.slow


def test_metrics_and_readiness_are_on_the_admin_port_only(
    env: dict[str, str], fixtures: list[Fixture], tmp_path: Path
) -> None:
    default = {k: v for k, v in env.items() if k != "KAYLE_RECEIVER_PROCESSES"}  # one process per usable CPU
    with serving(default, tmp_path / "serve.log") as receiver, sender() as http:
        for path in ("/metrics", "/readyz", "/metrics/", "/admin/metrics"):
            assert http.get(receiver.url + path).status_code == 404, path
        assert http.get(receiver.url + "/healthz").status_code == 200
        assert http.get(receiver.admin_url + "/healthz").status_code == 200
        assert http.get(receiver.admin_url + "/readyz").json() == {"status": "ready", "keys": 2}
        metrics = http.get(receiver.admin_url + "/metrics")
        assert metrics.status_code == 200 and "kayle_queue_depth" in metrics.text
        delivery = http.post(receiver.admin_url + PATH, content=fixtures[0].body, headers=fixtures[0].headers)
        assert delivery.status_code == 404  # the webhook is not on the admin port either
    started = [json.loads(line) for line in receiver.log.read_text().splitlines() if '"receiver listening"' in line]
    assert len(started) == 1
    assert started[0]["processes"] == usable_cpus()
    assert started[0]["admin"] == f"http://127.0.0.1:{receiver.admin_port}"
    assert started[0]["max_connections"] > 0


def test_the_admin_port_must_differ_from_the_webhook_port_and_be_free(env: dict[str, str]) -> None:
    port = free_port()
    same = subprocess.run(
        command("serve", "--port", str(port), "--admin-port", str(port)),
        env=subprocess_env(env), capture_output=True, text=True, timeout=60,
    )
    assert same.returncode == 2, same.stderr
    assert same.stderr.strip() == (
        f"kayle-webhooks: KAYLE_ADMIN_PORT: {port} is also the webhook port (--port); "
        "give the admin listener its own port"
    )
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        busy = subprocess.run(
            command("serve", "--port", str(free_port())),
            env=subprocess_env(env, KAYLE_ADMIN_PORT=str(taken)), capture_output=True, text=True, timeout=60,
        )
    assert busy.returncode == 2, busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1
    assert busy.stderr.startswith(f"kayle-webhooks: KAYLE_ADMIN_PORT: cannot listen on 127.0.0.1:{taken} ")

