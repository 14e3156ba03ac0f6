from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from receiver import keyring
from receiver.settings import Config, load_config
from tests.kayle_mock.control import MockKayle, mock_kayle
from tests.postgres import Server, binaries, private_postgres
from tests.support import (
    FIXTURE_KID,
    FIXTURE_TIME,
    FIXTURES,
    Fixture,
    claim_values,
    leaked_claims,
    load_fixtures,
    private_database,
    redis_blobs,
    sample_claim_values,
)

OTHER_KID = "second-key"


@pytest.fixture(scope="session")
def fixtures() -> list[Fixture]:
    return load_fixtures()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with private_database() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixtures' key plus a second, generated key (as after a rotation)."""
    directory = tmp_path_factory.mktemp("keys")
    shutil.copy(FIXTURES / "private.pem", directory / f"{FIXTURE_KID}.pem")
    (directory / f"{OTHER_KID}.pem").write_bytes(keyring.pem(keyring.generate(2048)))
    return directory


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, key_dir: Path, redis_url: str, fixtures: list[Fixture]) -> dict[str, str]:
    """The KAYLE_* environment of a configured service, also set in this process."""
    values = {
        "KAYLE_SIGNING_SECRETS": fixtures[0].secret,
        "KAYLE_KEY_DIR": str(key_dir),
        "KAYLE_REDIS_URL": redis_url,
        "KAYLE_RETRY_INTERVALS": "1,1",
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
    from receiver.app import create_app

    app = create_app(config, clock=lambda: float(FIXTURE_TIME))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as http,
    ):
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
    leaks = [f"log record: {v}" for v in leaked_claims(caplog.text, all_claim_values)]
    if tmp_path is not None:
        for log_file in tmp_path.rglob("*.log"):
            leaks += [f"{log_file.name}: {v}" for v in leaked_claims(log_file.read_bytes(), all_claim_values)]
    if url is not None:
        client = redis.Redis.from_url(url)
        for key, blob in redis_blobs(client):
            leaks += [f"redis {key}: {v}" for v in leaked_claims(blob, all_claim_values)]
        client.close()
    assert not leaks, f"claim values leaked: {sorted(set(leaks))[:10]}"


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
    """A private PostgreSQL server (tests.postgres), one per test session; never the machine's own."""
    if binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) not found; scripts/test installs them with apt-get")
    with private_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: Server) -> Iterator[str]:
    """A new, empty database on the private server, dropped after the test."""
    with postgres_server.database() as dsn:
        yield dsn
