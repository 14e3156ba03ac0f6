"""compose.yaml's Redis password and deploy/compose/sentinel.yaml, read as compose would (no Docker engine here).

The Redis command of compose.yaml is also run for real (redis-server on 127.0.0.1), through a
stand-in for the image's entrypoint, to show the password wiring works.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers.processes import free_port
from tests.helpers.tools import required_tool
from tests.helpers.vectors import REPO

COMPOSE = REPO / "compose.yaml"
SENTINEL = REPO / "deploy" / "compose" / "sentinel.yaml"
PASSWORD_FILE = "/run/secrets/redis_password"
READ_PASSWORD = f'"$(cat {PASSWORD_FILE})"'


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file for what sentinel.yaml overrides: mappings (environment,
    depends_on) merge key by key, a command is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


def shell(command: list[str]) -> str:
    """The script of a `sh -c SCRIPT` command, with compose's $$ escapes undone."""
    assert command[:2] == ["sh", "-c"] and len(command) == 3, command
    return command[2].replace("$$", "$")


def redis_server_args(command: list[str]) -> list[str]:
    """The arguments redis-server gets from `sh -c 'exec docker-entrypoint.sh redis-server ...'`."""
    script = shell(command)
    assert script.startswith("exec docker-entrypoint.sh redis-server "), script
    return shlex.split(script.removeprefix("exec docker-entrypoint.sh redis-server "))


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_redis_requires_the_password_of_the_compose_secret() -> None:
    compose = load(COMPOSE)
    redis_service = compose["services"]["redis"]
    args = redis_server_args(redis_service["command"])
    assert option(args, "--requirepass") == f"$(cat {PASSWORD_FILE})"
    assert READ_PASSWORD in shell(redis_service["command"])  # quoted: the shell passes it as one argument
    assert option(args, "--appendonly") == "yes"
    assert redis_service["secrets"] == ["redis_password"]
    assert compose["secrets"]["redis_password"]["file"].endswith("./secrets/redis_password}")
    check = redis_service["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and f"REDISCLI_AUTH={READ_PASSWORD}" in check[1].replace("$$", "$")
    assert "-a " not in check[1]  # never on a command line


def test_the_receiver_and_the_worker_read_the_redis_password_file() -> None:
    services = load(COMPOSE)["services"]
    for name in ("receiver", "worker"):
        environment = services[name]["environment"]
        assert environment["KAYLE_REDIS_PASSWORD_FILE"] == PASSWORD_FILE, name
        assert "redis_password" in services[name]["secrets"], name
        assert environment["KAYLE_REDIS_URL"] == "redis://redis:6379/0", name  # no password in the URL
        assert environment["KAYLE_SIGNING_SECRETS_FILE"] == "/run/secrets/kayle_signing_secrets", name


def test_only_the_receiver_s_ports_are_published_and_its_admin_port_on_loopback() -> None:
    services = load(COMPOSE)["services"]
    public, admin = services["receiver"]["ports"]
    assert public.endswith(":8000") and public.startswith("${KAYLE_BIND:-127.0.0.1}:")
    assert admin == "127.0.0.1:${KAYLE_ADMIN_PORT:-9000}:9000"  # never beside the public port
    assert services["receiver"]["environment"]["KAYLE_ADMIN_HOST"] == "0.0.0.0"  # the container's own addresses
    for name, service in services.items():
        if name != "receiver":
            assert "ports" not in service, name


def sentinel_setup() -> dict[str, Any]:
    return merge(load(COMPOSE), load(SENTINEL))


def sentinel_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if "command" in service and "--sentinel" in " ".join(service["command"])
    }


def test_the_sentinel_override_adds_a_replica_and_three_sentinels_with_quorum_2() -> None:
    compose = sentinel_setup()
    sentinels = sentinel_services(compose)
    assert sorted(sentinels) == ["sentinel-1", "sentinel-2", "sentinel-3"]
    for name, service in sentinels.items():
        script = shell(service["command"])
        assert re.search(r"^\s*echo \"sentinel monitor mymaster redis 6379 2\"$", script, re.MULTILINE), name
        assert f"sentinel auth-pass mymaster $(cat {PASSWORD_FILE})" in script, name
        assert "redis_password" in service["secrets"]
        # its own volume: Sentinel rewrites its configuration there
        (volume,) = service["volumes"]
        assert volume.split(":")[0] in compose["volumes"] and "/data/sentinel.conf" in script
        assert service["hostname"] == name and "ports" not in service
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len({service["volumes"][0] for service in sentinels.values()}) == 3

    replica = compose["services"]["redis-replica"]
    args = redis_server_args(replica["command"])
    assert option(args, "--replicaof") == "redis" and args[args.index("--replicaof") + 2] == "6379"
    assert option(args, "--masterauth") == option(args, "--requirepass") == f"$(cat {PASSWORD_FILE})"
    assert option(args, "--appendonly") == "yes"
    assert replica["volumes"][0].split(":")[0] in compose["volumes"]
    # the master needs the password too once a failover makes it a replica
    master = redis_server_args(compose["services"]["redis"]["command"])
    assert option(master, "--masterauth") == option(master, "--requirepass")


def test_the_receiver_and_the_worker_find_redis_through_the_sentinels() -> None:
    compose = sentinel_setup()
    sentinels = sorted(sentinel_services(compose))
    for name in ("receiver", "worker"):
        service = compose["services"][name]
        environment = service["environment"]
        url = re.fullmatch(r"redis\+sentinel://([^/]+)/(\w+)/(\d+)", environment["KAYLE_REDIS_URL"])
        assert url, environment["KAYLE_REDIS_URL"]
        assert url.group(1).split(",") == [f"{sentinel}:26379" for sentinel in sentinels]
        assert url.group(2) == "mymaster" and url.group(3) == "0"
        assert environment["KAYLE_REDIS_MIN_REPLICAS"] == "1"
        assert environment["KAYLE_REDIS_PASSWORD_FILE"] == PASSWORD_FILE  # kept from compose.yaml
        assert environment["KAYLE_KEY_DIR"] == "/keys"
        assert set(sentinels) <= set(service["depends_on"]), name
        assert service["command"][:2] == ["kayle-webhooks", "serve" if name == "receiver" else "worker"]


@pytest.mark.slow
def test_compose_s_redis_command_runs_redis_with_the_password_from_the_secret_file(tmp_path: Path) -> None:
    server = required_tool("redis-server", "apt-get install redis-server")
    password = "s3cret-from-the-file"
    (tmp_path / "redis_password").write_text(password + "\n")
    # The image's entrypoint drops to the redis user and execs its arguments: here it only execs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    (bin_dir / "redis-server").symlink_to(server)
    port = free_port()
    script = shell(load(COMPOSE)["services"]["redis"]["command"]).replace(
        PASSWORD_FILE, str(tmp_path / "redis_password")
    )
    script += f" --port {port} --bind 127.0.0.1 --dir {tmp_path} --save '' --appendonly no --daemonize no"
    process = subprocess.Popen(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        once = Retry(NoBackoff(), 0)  # an AuthenticationError is a ConnectionError, which redis-py retries
        authenticated = redis.Redis(port=port, password=password, socket_connect_timeout=1, retry=once)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert authenticated.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=once).ping()
        authenticated.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


class _Servers:
    """redis-server processes started from compose commands, stopped together."""

    def __init__(self, directory: Path, server: str) -> None:
        self.directory = directory
        self.bin = directory / "bin"
        self.bin.mkdir()
        # The image's entrypoint drops to the redis user and execs its arguments: here it only execs.
        (self.bin / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
        (self.bin / "docker-entrypoint.sh").chmod(0o755)
        (self.bin / "redis-server").symlink_to(server)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, script: str, name: str) -> subprocess.Popen[bytes]:
        with (self.directory / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                ["sh", "-c", script], env={"PATH": f"{self.bin}:/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := condition():
                return result
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_sentinel_override_s_commands_run_a_replica_and_three_sentinels_that_fail_over(tmp_path: Path) -> None:
    """Its commands, run for real on 127.0.0.1 with ports and names in place of the compose network's."""
    servers = _Servers(tmp_path, required_tool("redis-server", "apt-get install redis-server"))
    password = "0123456789abcdef"
    (tmp_path / "redis_password").write_text(password + "\n")
    compose = sentinel_setup()
    master_port, replica_port = free_port(), free_port()
    sentinel_ports = {name: free_port() for name in sorted(sentinel_services(compose))}

    def script(service: str, port: int) -> str:
        text = shell(compose["services"][service]["command"]).replace(PASSWORD_FILE, str(tmp_path / "redis_password"))
        text = text.replace("--replicaof redis 6379", f"--replicaof 127.0.0.1 {master_port}")
        text = re.sub(r"--replica-announce-ip \S+", "--replica-announce-ip 127.0.0.1", text)
        if service in sentinel_ports:
            (tmp_path / service).mkdir()
            text = text.replace("/data/sentinel.conf", str(tmp_path / service / "sentinel.conf"))
            text = text.replace("port 26379", f"port {port}").replace("$(hostname)", "127.0.0.1")
            text = text.replace("mymaster redis 6379 2", f"mymaster 127.0.0.1 {master_port} 2")
            return text.replace("--sentinel", "--sentinel --bind 127.0.0.1")
        (tmp_path / service).mkdir()
        return text + f" --port {port} --bind 127.0.0.1 --dir {tmp_path / service} --save ''"

    once = Retry(NoBackoff(), 0)
    try:
        master = servers.start(script("redis", master_port), "redis")
        servers.start(script("redis-replica", replica_port), "redis-replica")
        for name, port in sentinel_ports.items():
            servers.start(script(name, port), name)
        first = redis.Redis(port=next(iter(sentinel_ports.values())), retry=once, decode_responses=True)
        wait_until(
            lambda: first.execute_command("SENTINEL", "CKQUORUM", "mymaster").startswith("OK 3 usable Sentinels"),
            20,
            "three sentinels that know each other",
        )
        # The replica syncs with the master's password (masterauth), and the sentinels see it.
        wait_until(
            lambda: (
                [(r["port"], r["master-link-status"]) for r in first.sentinel_slaves("mymaster")]
                == [(replica_port, "ok")]
            ),
            30,
            "the replica in sync, known to the sentinels",
        )

        # SIGKILL the master: two sentinels agree it is down and promote the replica.
        master.kill()
        master.wait()
        promoted = wait_until(
            lambda: first.sentinel_get_master_addr_by_name("mymaster")[1] == replica_port, 30, "a failover"
        )
        assert promoted
        new_master = redis.Redis(port=replica_port, password=password, retry=once)
        wait_until(lambda: new_master.role()[0] == b"master", 10, "the replica to take writes")
        assert new_master.set("written-after-failover", "1")
        new_master.close()
        first.close()
    finally:
        servers.stop()
