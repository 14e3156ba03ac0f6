"""The operator's tools: keys new/list, send-test, and the help of every command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import redis
from rq import Queue

from receiver import keyring
from tests.support import command, free_port, running, wait_for_http
from workers.cli import build_parser


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def registration_body_from(output: str) -> dict:
    start = output.index("{\n")
    depth = 0
    for position, char in enumerate(output[start:], start):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return json.loads(output[start : position + 1])
    raise AssertionError("no JSON body printed")


def test_keys_new_writes_a_private_key_and_prints_the_registration_body(tmp_path: Path) -> None:
    result = run("keys", "new", "--kid", "prod-2026-11", "--bits", "2048", "--dir", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "keys" / "prod-2026-11.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = registration_body_from(result.stdout)
    assert body["key_id"] == "prod-2026-11"
    assert body["algorithm"] == "RSA-OAEP-256" and body["key_type"] == "RSA"
    private = keyring.load_private_key(path)
    assert body["jwk"] == keyring.public_jwk(private.public_key(), "prod-2026-11")
    assert set(body["jwk"]) == {"kty", "n", "e", "alg", "use", "kid"}
    assert private.key_size == 2048
    assert "curl -sS -X POST" in result.stdout and "/v1/webhooks/endpoints/" in result.stdout
    assert "BEGIN" not in result.stdout  # the private key is never printed

    again = run("keys", "new", "--kid", "prod-2026-11", "--bits", "2048", "--dir", str(tmp_path / "keys"))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert keyring.load_private_key(path).private_numbers() == private.private_numbers()

    listing = run("keys", "list", "--dir", str(tmp_path / "keys"))
    assert listing.returncode == 0
    line = next(line for line in listing.stdout.splitlines() if line.startswith("prod-2026-11"))
    assert line.split() == ["prod-2026-11", "2048", keyring.fingerprint(private.public_key())]


def test_keys_new_without_a_directory_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAYLE_KEY_DIR"}
    result = subprocess.run(
        command("keys", "new", "--kid", "k"), env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "kayle-webhooks: KAYLE_KEY_DIR: not set; set it or pass --dir"


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
    descriptions = [job.description for job in Queue("kayle", connection=redis_client).jobs]
    assert len(descriptions) == 9
    assert sum(d.startswith("verification.session.succeeded ") for d in descriptions) == 2


def _subcommand_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser, prefix: list[str]) -> None:
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, child in action.choices.items():
                    paths.append([*prefix, name])
                    walk(child, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.mark.parametrize("path", [[], *_subcommand_paths()], ids=lambda p: " ".join(p) or "top")
def test_every_command_has_help(path: list[str]) -> None:
    from contextlib import redirect_stdout
    from io import StringIO

    from workers.cli import main

    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: kayle-webhooks" in out.getvalue()
    if path:
        top = StringIO()
        with redirect_stdout(top), pytest.raises(SystemExit):
            main([*path[:-1], "--help"])
        assert path[-1] in top.getvalue()
