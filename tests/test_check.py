"""``kayle-webhooks check``: ready or not, with every problem and its fix."""

from __future__ import annotations

import os
import subprocess

import redis

from tests.support import REPO, command, free_port


def check(env: dict[str, str], **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("check"), env={**os.environ, **env, **overrides}, capture_output=True, text=True, timeout=60
    )


def test_a_ready_deployment_passes_and_reports_keys_redis_and_handlers(env, redis_client: redis.Redis) -> None:
    result = check(env)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "ok    key fixture-key-1: RSA 2048 bits" in out
    assert "ok    key second-key: RSA 2048 bits" in out
    assert "reachable at redis://127.0.0.1" in out
    assert "handlers for every event (on_any): kayle_example_plugin.handlers.record" in out
    persisted = redis_client.config_get("appendonly")["appendonly"] == "yes" or redis_client.config_get("save")["save"]
    assert ("Redis persistence on" in out) == bool(persisted)
    assert ("WARN  Redis persistence is off" in out) != bool(persisted)
    assert out.strip().endswith("ready")
    assert env["KAYLE_SIGNING_SECRETS"] not in out


def test_every_problem_is_reported_with_its_fix(env) -> None:
    broken = check(
        env, KAYLE_HANDLERS="tests.plugins.does_not_exist", KAYLE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert broken.returncode == 1
    assert "FAIL  Redis at redis://127.0.0.1:" in broken.stdout
    assert "tests.plugins.does_not_exist" in broken.stdout and "failed to import" in broken.stdout
    assert broken.stdout.count("fix: ") >= 2
    assert "not ready: 2 problem(s)" in broken.stdout

    unconfigured = check(env, KAYLE_SIGNING_SECRETS="")
    assert unconfigured.returncode == 1
    assert "FAIL  configuration: KAYLE_SIGNING_SECRETS:" in unconfigured.stdout


def test_without_entry_points_only_the_modules_in_kayle_handlers_are_loaded(env) -> None:
    def handlers_reported(**overrides: str) -> str:
        result = subprocess.run(
            command("check"), env={**os.environ, **env, "KAYLE_HANDLERS": "tests.plugins.recorder", **overrides},
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stdout
        return "\n".join(line for line in result.stdout.splitlines() if "handlers for" in line)

    with_plugins = handlers_reported()
    assert "kayle_example_plugin.handlers.record" in with_plugins  # the example plugin is installed
    assert "tests.plugins.recorder.audit" in with_plugins

    only_listed = handlers_reported(KAYLE_LOAD_ENTRY_POINTS="false")
    assert "kayle_example_plugin" not in only_listed
    assert "tests.plugins.recorder.audit" in only_listed
