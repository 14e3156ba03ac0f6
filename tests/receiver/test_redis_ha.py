"""Redis past one process: Sentinel URLs, the password file, acknowledgements that wait for a replica
(``KAYLE_REDIS_MIN_REPLICAS``) and the eviction guard, against real redis-server processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from receiver.connections import SentinelUrl, display_url, parse_sentinel_url, sync_redis
from receiver.settings import ConfigError, read_settings
from tests.helpers.processes import PATIENCE, command
from tests.helpers.receiver import admin_client, receiver_client
from tests.helpers.redis import IN_MEMORY, RedisServer, Sentinels, own_redis, replica_options, wait_in_sync
from tests.helpers.sending import PATH
from tests.helpers.vectors import REPO
from tests.helpers.workers import TALLY


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "rediss+sentinel://kayle:p%40ss@s1:26380,[::1],10.0.0.3:26379/my%20master/2"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("s1", 26380), ("::1", 26379), ("10.0.0.3", 26379)),
        service="my master",
        db=2,
        tls=True,
        username="kayle",
        password="p@ss",
    )
    assert parse_sentinel_url("redis+sentinel://:secret@s1/mymaster/0").password == "secret"
    assert display_url(url) == "rediss+sentinel://***@s1:26380,[::1],10.0.0.3:26379/my%20master/2"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://s1:26379/mymaster/0", "must be a redis://, rediss://, unix:// URL, or a Sentinel URL"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/mymaster/zero", "database 'zero' is not a number"),
        ("redis+sentinel://s1:26379/mymaster", "database '' is not a number"),
        ("redis+sentinel://s1:263790/mymaster/0", "bad port in sentinel address 's1:263790'"),
        ("redis+sentinel://s1,,s2/mymaster/0", "empty sentinel address"),
    ],
)
def test_a_bad_redis_url_is_refused_at_start_up_saying_what_to_fix(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAYLE_REDIS_URL", url)
    with pytest.raises(ConfigError) as refused:
        read_settings()
    message = str(refused.value)
    assert message.startswith("KAYLE_REDIS_URL: ") and says in message
    assert "redis+sentinel://[user:password@]host1:26379" in message or "Sentinel URL" in message


def test_a_password_in_both_the_url_and_the_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "password").write_text("hunter2\n")
    monkeypatch.setenv("KAYLE_REDIS_URL", "redis+sentinel://:other@s1/mymaster/0")
    monkeypatch.setenv("KAYLE_REDIS_PASSWORD_FILE", str(tmp_path / "password"))
    with pytest.raises(ConfigError, match="KAYLE_REDIS_PASSWORD_FILE and a password in KAYLE_REDIS_URL") as refused:
        read_settings()
    assert "other" not in str(refused.value) and "hunter2" not in str(refused.value)


@pytest.mark.slow
def test_the_password_file_lets_every_process_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret-from-a-secret\n")
    with own_redis(tmp_path / "redis", (*IN_MEMORY, "--requirepass", "s3cret-from-a-secret")) as server:
        monkeypatch.setenv("KAYLE_REDIS_URL", server.url)
        monkeypatch.setenv("KAYLE_REDIS_PASSWORD_FILE", str(tmp_path / "password"))
        assert sync_redis(read_settings()).ping()
        (tmp_path / "password").write_text("")
        with pytest.raises(ConfigError, match=r"KAYLE_REDIS_PASSWORD_FILE: .* is empty"):
            sync_redis(read_settings())


@pytest.mark.slow
@pytest.mark.anyio
async def test_with_min_replicas_an_event_is_acknowledged_only_once_a_replica_has_it(
    env, fixtures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica paused: 503 not_replicated (the event is stored on the primary all the same); resumed: the
    retry is a duplicate, a new event is accepted."""
    with own_redis(tmp_path / "primary", IN_MEMORY) as primary, own_redis(
        tmp_path / "replica", replica_options(primary)
    ) as replica:
        wait_in_sync(replica)
        monkeypatch.setenv("KAYLE_REDIS_URL", primary.url)
        monkeypatch.setenv("KAYLE_REDIS_MIN_REPLICAS", "1")
        monkeypatch.setenv("KAYLE_REDIS_REPLICA_TIMEOUT_MS", "300")
        assert replica.process is not None
        async with receiver_client() as client:
            replica.process.send_signal(signal.SIGSTOP)
            try:
                paused = await client.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
            finally:
                replica.process.send_signal(signal.SIGCONT)
            assert paused.status_code == 503
            assert paused.json()["error"]["code"] == "not_replicated"
            deadline = time.monotonic() + PATIENCE
            while True:  # Kayle's retries, until the resumed replica has caught up
                retried = await client.post(PATH, content=fixtures[0].body, headers=fixtures[0].headers)
                if retried.status_code != 503 or time.monotonic() > deadline:
                    break
                assert retried.json()["error"]["code"] == "not_replicated"
                await asyncio.sleep(0.05)
            assert (retried.status_code, retried.json()["status"]) == (200, "duplicate")
            fresh = await client.post(PATH, content=fixtures[1].body, headers=fixtures[1].headers)
            assert (fresh.status_code, fresh.json()["status"]) == (200, "accepted")
        with replica.client() as copy:
            assert copy.llen("rq:queue:kayle") == 2  # both events reached the replica before their 2xx
    said = [r.getMessage() for r in caplog.records if r.name == "kayle.receiver"]
    assert any("replicas did not confirm" in message for message in said)
    assert any("replicas confirm the events again" in message for message in said)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_redis_that_may_evict_fails_check_logs_an_error_and_is_not_ready(
    env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis(tmp_path / "redis", (*IN_MEMORY, "--maxmemory-policy", "volatile-lru")) as server:
        monkeypatch.setenv("KAYLE_REDIS_URL", server.url)
        result = subprocess.run(
            command("check"), env={**os.environ}, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1, result.stdout
        assert "FAIL  Redis maxmemory-policy is volatile-lru, not noeviction" in result.stdout
        assert "fix: set `maxmemory-policy noeviction`" in result.stdout
        async with receiver_client():
            pass
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("maxmemory-policy is volatile-lru" in message for message in errors)
        async with admin_client() as admin:
            answer = await admin.get("/readyz")
            assert answer.status_code == 503
            assert answer.json() == {"status": "unavailable", "redis": "may_evict", "maxmemory_policy": "volatile-lru"}
            with server.client() as client:
                client.config_set("maxmemory-policy", "noeviction")
            assert (await admin.get("/readyz")).status_code == 200


@pytest.mark.slow
def test_commands_find_the_primary_through_the_sentinels(env, tmp_path: Path) -> None:
    """`check` and `worker --burst` reach the primary the sentinels name; `check` counts its replicas against
    KAYLE_REDIS_MIN_REPLICAS and shows the URL without its password."""
    (tmp_path / "password").write_text("s3cret\n")
    secured = (*IN_MEMORY, "--requirepass", "s3cret", "--masterauth", "s3cret")
    primary = RedisServer(tmp_path / "primary", options=secured)
    replica = RedisServer(tmp_path / "replica", options=(*replica_options(primary), "--requirepass", "s3cret",
                                                         "--masterauth", "s3cret"))
    sentinels = Sentinels(tmp_path / "sentinels", primary, auth="s3cret")
    with ExitStack() as stack:
        for server in (primary, replica, sentinels):
            server.start()
            stack.callback(server.stop)
        environment = {**os.environ, "KAYLE_REDIS_URL": sentinels.url, "KAYLE_HANDLERS": TALLY,
                       "KAYLE_TEST_RECORD": str(tmp_path / "records.jsonl"),
                       "KAYLE_REDIS_PASSWORD_FILE": str(tmp_path / "password")}
        ready = subprocess.run(command("check"), env={**environment, "KAYLE_REDIS_MIN_REPLICAS": "1"}, cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        assert f"reachable at {sentinels.url}" in ready.stdout
        assert "ok    Redis primary has 1 connected replica(s); events wait for 1" in ready.stdout
        short = subprocess.run(command("check"), env={**environment, "KAYLE_REDIS_MIN_REPLICAS": "2"}, cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        assert short.returncode == 1
        assert "KAYLE_REDIS_MIN_REPLICAS is 2 but the Redis primary has 1 connected replica(s)" in short.stdout
        burst = subprocess.run(command("worker", "--burst"), env=environment, cwd=REPO, capture_output=True,
                               text=True, timeout=120)
        assert burst.returncode == 0, burst.stderr[-2000:]
        with_password = subprocess.run(command("check"), cwd=REPO, capture_output=True, text=True, timeout=120,
                                       env={**environment, "KAYLE_REDIS_PASSWORD_FILE": "",
                                            "KAYLE_REDIS_URL": sentinels.url.replace("://", "://:s3cret@")})
        assert "reachable at redis+sentinel://***@127.0.0.1:" in with_password.stdout
        assert "s3cret" not in with_password.stdout
