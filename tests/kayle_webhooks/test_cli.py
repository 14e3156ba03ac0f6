"""The operator's tools: keys new/list, send-test, and the help of every command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import click
import pytest
import redis
from rq import Queue

from kayle_webhooks.cli import main
from kayle_webhooks.cli.root import root
from kayle_webhooks.keys import public_jwk
from receiver.keyring import fingerprint, load_private_key
from tests.helpers.processes import command, free_port, running, wait_for_http
from tests.helpers.vectors import REPO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env={**os.environ, **(env or {})}, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def registration_body_from(output: str) -> dict:
    start = output.index("{\n")
    depth = 0
    for position, char in enumerate(output[start:], start):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return json.loads(output[start : position + 1])
    raise AssertionError("no JSON body printed")


@pytest.mark.slow
def test_keys_new_writes_a_private_key_and_prints_the_registration_body(tmp_path: Path) -> None:
    result = run("keys", "new", "--kid", "prod-2026-11", "--bits", "2048", "--dir", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "keys" / "prod-2026-11.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = registration_body_from(result.stdout)
    assert body["key_id"] == "prod-2026-11"
    assert body["algorithm"] == "RSA-OAEP-256" and body["key_type"] == "RSA"
    private = load_private_key(path)
    assert body["jwk"] == public_jwk(private.public_key(), "prod-2026-11")
    assert set(body["jwk"]) == {"kty", "n", "e", "alg", "use", "kid"}
    assert private.key_size == 2048
    assert "curl -sS -X POST" in result.stdout and "/v1/webhooks/endpoints/" in result.stdout
    assert "BEGIN" not in result.stdout  # the private key is never printed

    again = run("keys", "new", "--kid", "prod-2026-11", "--bits", "2048", "--dir", str(tmp_path / "keys"))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert load_private_key(path).private_numbers() == private.private_numbers()

    listing = run("keys", "list", "--dir", str(tmp_path / "keys"))
    assert listing.returncode == 0
    line = next(line for line in listing.stdout.splitlines() if line.startswith("prod-2026-11"))
    assert line.split() == ["prod-2026-11", "2048", fingerprint(private.public_key())]


@pytest.mark.slow
def test_keys_new_without_a_directory_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAYLE_KEY_DIR"}
    result = subprocess.run(
        command("keys", "new", "--kid", "k"), env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kayle-webhooks: KAYLE_KEY_DIR: not set; point it at the directory of <kid>.pem private keys, or pass --dir"
    )


@pytest.mark.slow
def test_send_test_delivers_every_type_to_a_running_receiver(
    env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    port = free_port()
    environment = {**os.environ, **env}
    with running(command("serve", "--port", str(port)), environment, tmp_path / "serve.log") as process:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        url = f"http://127.0.0.1:{port}/webhooks/kayle"
        result = run("send-test", "--url", url, "--count", "2", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count('"status":"accepted"') == 8
        single = run("send-test", "--url", url, "--type", "verification.session.expired", env=env)
        assert single.returncode == 0 and single.stdout.count("accepted") == 2  # the answer and the summary
        refused = run("send-test", "--url", url + "-wrong", env=env)
        assert refused.returncode == 1 and "404" in refused.stdout
        twice = run("send-test", "--url", url, "--type", "verification.session.failed", "--repeat", "3", env=env)
        assert twice.returncode == 0, twice.stdout
        assert twice.stdout.count('"status":"accepted"') == 1 and twice.stdout.count('"status":"duplicate"') == 2
        typo = run("send-test", "--url", url, "--type", "verification.session.succeded", env=env)
        assert typo.returncode == 1 and typo.stdout == ""
        assert "did you mean 'verification.session.succeeded'?" in typo.stderr and "--allow-unknown-type" in typo.stderr
        future = run("send-test", "--url", url, "--type", "x.session.paused", "--allow-unknown-type", env=env)
        assert future.returncode == 0 and '"status":"accepted"' in future.stdout
    descriptions = [job.description for job in Queue("kayle", connection=redis_client).jobs]
    assert len(descriptions) == 11
    assert sum(d.startswith("verification.session.succeeded ") for d in descriptions) == 2


def _subcommand_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name, child in group.commands.items():
            paths.append([*prefix, name])
            if isinstance(child, click.Group):
                walk(child, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", [[], *_subcommand_paths()], ids=lambda p: " ".join(p) or "top")
def test_every_command_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"Usage: kayle-webhooks {' '.join(path)}".rstrip() in text
    if path:
        assert main([*path[:-1], "--help"]) == 0
        assert path[-1] in capsys.readouterr().out


@pytest.mark.slow
def test_log_format_is_taken_before_and_after_the_subcommand(env: dict[str, str], tmp_path: Path) -> None:
    for argv in (["--log-format", "text", "worker", "--burst"], ["worker", "--burst", "--log-format", "text"]):
        result = run(*argv, env={**env, "KAYLE_HANDLERS": "tests.plugins.recorder"})
        assert result.returncode == 0, result.stderr
        assert "INFO    kayle.worker: worker starting" in result.stderr and '{"time"' not in result.stderr


@pytest.mark.slow
def test_forget_says_when_there_was_nothing_to_forget(env: dict[str, str], redis_client: redis.Redis) -> None:
    result = run("forget", "evt_nope", env=env)
    assert result.returncode == 1
    assert "evt_nope: nothing to forget" in result.stderr and "forgot" not in result.stdout


@pytest.mark.slow
def test_a_worker_that_cannot_reach_redis_names_the_url_without_its_password(env: dict[str, str]) -> None:
    url = f"redis://kayle:hunter2@127.0.0.1:{free_port()}/3"
    result = run("worker", "--burst", env={**env, "KAYLE_REDIS_URL": url, "KAYLE_HANDLERS": "tests.plugins.recorder"})
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("kayle-webhooks: KAYLE_REDIS_URL: cannot reach Redis at redis://***@127.0.0.1:")
    assert "hunter2" not in result.stderr


@pytest.mark.slow
def test_a_handler_module_that_fails_to_import_is_named_with_its_file_line_and_a_fix(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "badhandlers.py").write_text("from workers import on_any\n\nimport json\nsettings = json.loads('{')\n")
    result = subprocess.run(
        command("worker", "--burst"),
        env={**os.environ, **env, "KAYLE_HANDLERS": "badhandlers", "KAYLE_LOAD_ENTRY_POINTS": "false"},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "KAYLE_HANDLERS: handler module 'badhandlers' failed to import (JSONDecodeError" in line
    assert f"fix: fix the error at {tmp_path / 'badhandlers.py'}:4" in line
