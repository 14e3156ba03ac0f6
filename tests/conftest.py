from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from kayle_webhooks.keys import generate, pem
from receiver.settings import Config, load_config
from tests.helpers.postgres import Server, binaries, private_postgres
from tests.helpers.privacy import claim_values, leaks, sample_claim_values
from tests.helpers.processes import free_port
from tests.helpers.receiver import admin_client, receiver_client
from tests.helpers.redis import private_database
from tests.helpers.vectors import FIXTURE_KID, FIXTURE_TIME, FIXTURES, OTHER_KID, Fixture, load_fixtures
from tests.kayle_mock.control import MockKayle, mock_kayle


@pytest.fixture(scope="session")
def fixtures() -> list[Fixture]:
    return load_fixtures()


@pytest.fixture(scope="session")
def redis_database() -> Iterator[str]:
    """A numbered database of the test Redis that this test process has to itself."""
    with private_database() as url:
        yield url


@pytest.fixture
def redis_url(redis_database: str) -> str:
    """This test's Redis database, empty when the test starts."""
    client = redis.Redis.from_url(redis_database)
    client.flushdb()
    client.close()
    return redis_database


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixtures' key plus a second, generated key (as after a rotation)."""
    directory = tmp_path_factory.mktemp("keys")
    shutil.copy(FIXTURES / "private.pem", directory / f"{FIXTURE_KID}.pem")
    (directory / f"{OTHER_KID}.pem").write_bytes(pem(generate(2048)))
    for key in directory.iterdir():
        key.chmod(0o600)  # as a deployment keeps them: the service warns about keys others can read
    return directory


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, key_dir: Path, redis_url: str, fixtures: list[Fixture]) -> dict[str, str]:
    """The KAYLE_* environment of a configured service, also set in this process."""
    values = {
        "KAYLE_SIGNING_SECRETS": fixtures[0].secret,
        "KAYLE_KEY_DIR": str(key_dir),
        "KAYLE_REDIS_URL": redis_url,
        "KAYLE_RETRY_INTERVALS": "1,1",
        # A `serve` started by a test: one process (what the tests reason about), an admin port of its own.
        "KAYLE_RECEIVER_PROCESSES": "1",
        "KAYLE_ADMIN_PORT": str(free_port()),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KAYLE_SIGNING_SECRETS_FILE", raising=False)
    monkeypatch.chdir(tmp_dir_without_dotenv(key_dir))
    return values


def tmp_dir_without_dotenv(key_dir: Path) -> Path:
    """A working directory with no .env in it, so the developer's own .env never leaks into tests."""
    return key_dir.parent


@pytest.fixture
def config(env: dict[str, str]) -> Config:
    return load_config()


@pytest.fixture
def frozen_clock() -> float:
    return float(FIXTURE_TIME)


@pytest.fixture
async def client(config: Config, redis_client: redis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the receiver app with its clock frozen at the fixtures' timestamp."""
    async with receiver_client(config) as http:
        yield http


@pytest.fixture
async def admin(config: Config, redis_client: redis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the admin app (the receiver's /healthz, /readyz and /metrics)."""
    async with admin_client(config) as http:
        yield http


@pytest.fixture(scope="session")
def all_claim_values(fixtures: list[Fixture]) -> set[str]:
    return claim_values(fixtures) | sample_claim_values()


@pytest.fixture(autouse=True)
def privacy_sweep(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, all_claim_values: set[str]
) -> Iterator[None]:
    """After every test: no claim value in captured logs, in *.log files it left, or in its Redis database."""
    caplog.set_level(logging.DEBUG)
    tmp_path: Path | None = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    url: str | None = request.getfixturevalue("redis_url") if "redis_url" in request.fixturenames else None
    yield
    client = redis.Redis.from_url(url) if url is not None else None
    files = list(tmp_path.rglob("*.log")) if tmp_path is not None else []
    found = leaks(all_claim_values, client, files, [caplog.text])
    if client is not None:
        client.close()
    assert not found, f"claim values leaked: {found[:10]}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def kayle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockKayle]:
    """The mock of Kayle's API, a real process on 127.0.0.1 (one per test module)."""
    with mock_kayle(tmp_path_factory.mktemp("kayle")) as server:
        yield server


@pytest.fixture
def kayle(kayle_server: MockKayle) -> MockKayle:
    kayle_server.reset()
    return kayle_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A private PostgreSQL server (tests.helpers.postgres), one per test session; never the machine's own."""
    if binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) not found; scripts/test installs them with apt-get")
    with private_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: Server) -> Iterator[str]:
    """A new, empty database on the private server, dropped after the test."""
    with postgres_server.database() as dsn:
        yield dsn
