"""Redis for the tests: a private numbered database on the shared server, or a redis-server of one's own."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from receiver import dedup
from receiver.settings import read_settings
from tests.helpers.processes import free_port, wait_until

DEADLINE = 60.0


def base_redis_url() -> str:
    return os.environ.get("KAYLE_TEST_REDIS_URL") or os.environ.get("KAYLE_REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextmanager
def private_database() -> Iterator[str]:
    """Claim an empty numbered database on the test Redis for this test process; flush it afterwards."""
    url = base_redis_url()
    base = redis.Redis.from_url(url)
    prefix = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    lock_key = "kayle-webhooks-tests:db:{}"
    for number in range(15, 0, -1):
        if base.set(lock_key.format(number), os.getpid(), nx=True, ex=3 * 3600):
            client = redis.Redis.from_url(f"{prefix}/{number}")
            if client.dbsize() == 0:
                try:
                    yield f"{prefix}/{number}"
                finally:
                    client.flushdb()
                    base.delete(lock_key.format(number))
                return
            base.delete(lock_key.format(number))
    raise RuntimeError("no empty Redis database (1-15) is free for the tests")


@dataclass
class RedisServer:
    """A redis-server of the test's own on a private port: append-only with ``fsync always`` by default, so that
    a restart keeps every acknowledged write."""

    directory: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    options: Sequence[str] = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = [option for option in self.options[:1] if not option.startswith("--")]  # a file comes first
        argv = ["redis-server", *config, "--bind", self.host, "--port", str(self.port), "--dir", str(self.directory)]
        argv += self.options[len(config) :]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if client.ping():
                    break
            except redis.AuthenticationError:  # it answers: it requires a password
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=DEADLINE)
        self.process = None


@contextmanager
def own_redis(directory: Path, options: Sequence[str] | None = None, host: str = "127.0.0.1") -> Iterator[RedisServer]:
    server = RedisServer(directory, host=host)
    if options is not None:
        server.options = options
    server.start()
    try:
        yield server
    finally:
        server.stop()


def marked(client: redis.Redis, *event_ids: str) -> set[str]:
    """The events among ``event_ids`` that have a dedup marker (the window of the current settings)."""
    return dedup.seen(client, read_settings().dedup_ttl_seconds, event_ids)


def mark(client: redis.Redis, event_id: str) -> None:
    """Leave a dedup marker for ``event_id`` as the intake does, without a job (an event handled and gone)."""
    digest = dedup.Digest.of(event_id)
    script = dedup.prelude(read_settings().dedup_ttl_seconds) + "mark(ARGV[1], tonumber(ARGV[2]))"
    client.eval(script, 0, digest.value, digest.spread)


#: Options for a server whose data need not survive its own restart (it is promoted or re-synced instead).
IN_MEMORY = ("--appendonly", "no", "--save", "", "--repl-diskless-sync-delay", "0")
SERVICE = "mymaster"


def replica_options(primary: RedisServer | int) -> tuple[str, ...]:
    port = primary if isinstance(primary, int) else primary.port
    return (*IN_MEMORY, "--replicaof", "127.0.0.1", str(port))


def wait_in_sync(replica: RedisServer) -> None:
    """Until ``replica``'s link to its primary is up (its first full sync done)."""

    def synced() -> bool:
        with replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    wait_until(synced, f"replica on port {replica.port} in sync")


@dataclass
class Sentinels:
    """Three sentinels (``redis-server --sentinel``) monitoring ``primary`` as :data:`SERVICE`, quorum 2, quick to
    declare a primary down and fail over (``down_after_ms``)."""

    directory: Path
    primary: RedisServer
    down_after_ms: int = 2000  # short, yet long enough that a busy machine's slow answers are not taken for a death
    auth: str | None = None  # the data nodes' password (the sentinels themselves have none)
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.servers)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        for number in range(3):
            directory = self.directory / f"sentinel-{number}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"  # sentinel rewrites it: the replicas and peers it learns
            conf.write_text(
                f"sentinel monitor {SERVICE} {self.primary.host} {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {self.down_after_ms * 4}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + (f"sentinel auth-pass {SERVICE} {self.auth}\n" if self.auth else "")
            )
            server = RedisServer(directory, options=(str(conf), "--sentinel"))
            server.start()
            self.servers.append(server)
        wait_until(self._acquainted, "sentinels know each other and the replica")

    def _acquainted(self) -> bool:
        for server in self.servers:
            with server.client() as client:
                state = client.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for server in self.servers:
            try:
                with server.client() as client:
                    return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
            except redis.ConnectionError:
                continue
        return None

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
