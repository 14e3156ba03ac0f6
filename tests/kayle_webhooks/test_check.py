"""``kayle-webhooks check``: ready or not, with every problem and its fix, in one run."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
import redis

from tests.helpers.plugins import EXAMPLE_MODULE, EXAMPLE_PLUGIN, entry_point_dir
from tests.helpers.processes import command, free_port
from tests.helpers.redis import own_redis
from tests.helpers.vectors import FIXTURE_KID, OTHER_KID, REPO

pytestmark = pytest.mark.slow


def check(env: dict[str, str], cwd: Path = REPO, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("check"), env={**os.environ, **env, **overrides}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_ready_deployment_passes_and_reports_keys_redis_and_handlers(env, redis_client: redis.Redis) -> None:
    result = check(env, KAYLE_HANDLERS=EXAMPLE_MODULE, PYTHONPATH=str(EXAMPLE_PLUGIN))
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


def test_every_problem_is_reported_with_its_fix_in_one_run(env, tmp_path: Path) -> None:
    broken = check(
        env,
        KAYLE_SIGNING_SECRETS="",
        KAYLE_KEY_DIR=str(tmp_path / "missing"),
        KAYLE_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        KAYLE_HANDLERS="tests.plugins.does_not_exist",
    )
    assert broken.returncode == 1
    out = broken.stdout
    assert "FAIL  configuration: KAYLE_SIGNING_SECRETS:" in out
    assert "FAIL  keys: KAYLE_KEY_DIR:" in out and "missing is not a directory" in out
    assert "FAIL  Redis at redis://***@127.0.0.1:" in out and "hunter2" not in out
    assert "tests.plugins.does_not_exist" in out and "failed to import" in out
    assert out.count("fix: ") >= 4
    assert "not ready: 4 problem(s)" in out


def test_a_key_others_can_read_or_linked_from_elsewhere_fails_with_its_fix(
    env, tmp_path: Path, key_dir: Path
) -> None:
    keys, elsewhere = tmp_path / "keys", tmp_path / "elsewhere"
    keys.mkdir()
    elsewhere.mkdir()
    exposed = keys / "exposed.pem"
    exposed.write_bytes((key_dir / f"{FIXTURE_KID}.pem").read_bytes())
    exposed.chmod(0o640)
    outside = elsewhere / "outside.pem"
    outside.write_bytes((key_dir / f"{OTHER_KID}.pem").read_bytes())
    outside.chmod(0o600)
    (keys / "linked.pem").symlink_to(outside)

    result = check(env, KAYLE_KEY_DIR=str(keys), KAYLE_HANDLERS=EXAMPLE_MODULE, PYTHONPATH=str(EXAMPLE_PLUGIN))

    out = result.stdout
    assert result.returncode == 1, out
    assert f"FAIL  {exposed}: private key file with mode 0640: its group can read it" in out
    assert f"fix: chmod 600 {exposed}" in out
    assert f"FAIL  {keys / 'linked.pem'} is a symlink to {outside}, outside the key directory" in out
    assert "not ready: 2 problem(s)" in out


def test_a_handler_module_in_the_current_directory_is_found(env, tmp_path: Path) -> None:
    """As `python -m` does: a user runs check (or a worker) from the folder of their plugin module."""
    (tmp_path / "myhandlers.py").write_text(
        "from workers import on_any\n\n@on_any\ndef audit(event, ctx):\n    pass\n"
    )
    found = check(env, cwd=tmp_path, KAYLE_HANDLERS="myhandlers", KAYLE_LOAD_ENTRY_POINTS="false")
    assert found.returncode == 0, found.stdout
    assert "handlers for every event (on_any): myhandlers.audit" in found.stdout

    missing = check(env, cwd=tmp_path, KAYLE_HANDLERS="otherhandlers", KAYLE_LOAD_ENTRY_POINTS="false")
    assert missing.returncode == 1
    assert f"searched the current directory ({tmp_path})" in missing.stdout and "PYTHONPATH" in missing.stdout


def test_a_mistyped_event_type_is_warned_about_with_the_closest_known_one(env, tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(
        "from workers import on\n\n@on('verification.session.succeded')\ndef provision(event, ctx):\n    pass\n"
    )
    result = check(env, cwd=tmp_path, KAYLE_HANDLERS="typo", KAYLE_LOAD_ENTRY_POINTS="false")
    assert "WARN  typo.provision registered for 'verification.session.succeded', which is not a known" in result.stdout
    assert "did you mean 'verification.session.succeeded'?" in result.stdout
    assert result.returncode == 0  # a type Kayle adds later must stay possible: a warning, not a failure


def test_without_entry_points_only_the_modules_in_kayle_handlers_are_loaded(env, tmp_path: Path) -> None:
    plugins = entry_point_dir(tmp_path / "site", "example", EXAMPLE_MODULE)

    def handlers_reported(**overrides: str) -> str:
        result = check(
            env, KAYLE_HANDLERS="tests.plugins.recorder", PYTHONPATH=f"{plugins}:{EXAMPLE_PLUGIN}", **overrides
        )
        assert result.returncode == 0, result.stdout
        return "\n".join(line for line in result.stdout.splitlines() if "handlers for" in line)

    with_plugins = handlers_reported()
    assert "kayle_example_plugin.handlers.record" in with_plugins  # advertised by an installed entry point
    assert "tests.plugins.recorder.audit" in with_plugins

    only_listed = handlers_reported(KAYLE_LOAD_ENTRY_POINTS="false")
    assert "kayle_example_plugin" not in only_listed
    assert "tests.plugins.recorder.audit" in only_listed


def test_a_redis_open_to_the_network_without_a_password_is_warned_about(env, tmp_path: Path) -> None:
    address = next((a for a in _own_addresses() if not ipaddress.ip_address(a).is_loopback), None)
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind a Redis to")
    open_redis = ("--protected-mode", "no", "--save", "", "--appendonly", "yes")
    with own_redis(tmp_path / "open", options=open_redis, host=address) as server:
        url = f"redis://{address}:{server.port}/0"
        warned = check(env, KAYLE_REDIS_URL=url, KAYLE_HANDLERS="tests.plugins.recorder")
        assert f"WARN  Redis at {address}:{server.port} answers clients without a password" in warned.stdout
        assert warned.returncode == 0  # a warning: loopback-only setups and private networks are legitimate

        server.client().config_set("requirepass", "s3cret-for-tests")
        guarded = check(env, KAYLE_REDIS_URL=f"redis://:s3cret-for-tests@{address}:{server.port}/0")
        assert "answers clients without a password" not in guarded.stdout
        assert "s3cret-for-tests" not in guarded.stdout


def _own_addresses() -> list[str]:
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    return [a for a in found if "." in a]


def test_tracing_and_error_reports_asked_for_without_their_packages_are_reported(env, tmp_path: Path) -> None:
    from tests.helpers.telemetry import import_watch

    asked = {"OTEL_TRACES_EXPORTER": "console", "KAYLE_SENTRY_DSN": "https://public@sentry.example/1"}
    present = check(env, KAYLE_HANDLERS="tests.plugins.recorder", **asked)
    assert "ok    tracing on: console" in present.stdout and "ok    error reports to Sentry" in present.stdout
    missing = check(env, KAYLE_HANDLERS="tests.plugins.recorder", **asked, **import_watch(tmp_path, refuse=True))
    assert missing.returncode == 1
    assert "WARN  tracing is off: OTEL_* variables ask for traces" in missing.stdout
    assert "FAIL  error reports: KAYLE_SENTRY_DSN is set but sentry-sdk is not installed" in missing.stdout
    assert "public@" not in missing.stdout + present.stdout
