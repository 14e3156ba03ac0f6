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
from tests.support import FIXTURE_KID, FIXTURE_TIME, FIXTURES, Fixture, load_fixtures, private_database

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
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as http:
        yield http


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
