"""The least-privilege Redis user the README documents is enough for the receiver, workers and every command."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import PATIENCE, command, free_port, running, wait_for_http
from tests.helpers.redis import own_redis
from tests.helpers.vectors import REPO

pytestmark = pytest.mark.slow


def documented_acl() -> list[str]:
    line = next(line.strip() for line in (REPO / "README.md").read_text().splitlines() if "ACL SETUSER kayle" in line)
    return line.split()


def test_the_documented_acl_user_runs_the_whole_service(env: dict[str, str], tmp_path: Path) -> None:
    with own_redis(tmp_path / "redis") as server:
        admin = server.client()
        admin.execute_command(*[word.replace(">PASSWORD", ">acl-test-pw") for word in documented_acl()])
        admin.config_set("requirepass", "admin-pw")
        url = f"redis://kayle:acl-test-pw@127.0.0.1:{server.port}/0"
        service = {
            **os.environ, **env, "KAYLE_REDIS_URL": url, "KAYLE_HANDLERS": "tests.plugins.recorder",
            "KAYLE_TEST_RECORD": str(tmp_path / "records.jsonl"),
        }

        def run(*argv: str) -> subprocess.CompletedProcess[str]:
            result = subprocess.run(
                command(*argv), env=service, cwd=REPO, capture_output=True, text=True, timeout=PATIENCE
            )
            assert "NOPERM" not in result.stdout + result.stderr, result.stdout + result.stderr
            return result

        port = free_port()
        with running(command("serve", "--port", str(port)), service, tmp_path / "serve.log") as receiver:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", process=receiver)
            sent = run("send-test", "--url", f"http://127.0.0.1:{port}/webhooks/kayle", "--repeat", "2")
            assert sent.returncode == 0, sent.stdout
        assert run("worker", "--burst").returncode == 0
        assert run("failed", "list").returncode == 0
        event_id = re.search(r"evt_[a-z0-9]+", sent.stdout)
        assert event_id is not None and run("forget", event_id.group(0)).returncode == 0
        assert run("check").returncode == 0

        refused = admin.execute_command("AUTH", "admin-pw") and admin.acl_log()
        assert {entry["object"] for entry in refused} <= {"config|get"}, refused  # read with INFO instead
    assert "NOPERM" not in (tmp_path / "serve.log").read_text()
