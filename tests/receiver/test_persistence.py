"""The receiver warns at start-up when Redis persists nothing (it would lose acknowledged events)."""

from __future__ import annotations

import pytest
import redis

from receiver.app import create_app
from receiver.persistence import WARNING
from receiver.settings import load_config
from tests.helpers.redis import own_redis

pytestmark = pytest.mark.anyio


async def test_start_up_warns_only_when_redis_persists_nothing(env, monkeypatch, tmp_path, caplog) -> None:
    with own_redis(tmp_path / "redis") as server:
        monkeypatch.setenv("KAYLE_REDIS_URL", server.url)
        client = redis.Redis.from_url(server.url)
        for appendonly, save, warns in (("yes", "", False), ("no", "3600 1", False), ("no", "", True)):
            client.config_set("appendonly", appendonly)
            client.config_set("save", save)
            caplog.clear()
            app = create_app(load_config())
            async with app.router.lifespan_context(app):
                pass
            warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.getMessage() == WARNING]
            assert bool(warnings) is warns, (appendonly, save)
        client.close()
