"""Start the mock Kayle API as a real process and drive its ``/_mock`` control routes."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.processes import free_port, running, wait_for_http

API_KEY = "kk_test_4b1d2f0c9e8a7d6c5b4a3f2e1d0c9b8a"
READONLY_KEY = "kk_readonly_0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@dataclass
class MockKayle:
    url: str
    api_key: str = API_KEY
    readonly_key: str = READONLY_KEY

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._call("POST", "/_mock/reset")

    def fault(self, method: str, path: str, status: int, count: int = 1) -> None:
        self._call("POST", "/_mock/faults", {"method": method, "path": path, "status": status, "count": count})

    def tamper(self, method: str, path: str, patch: dict[str, Any], count: int = 1) -> None:
        """Forge the next ``count`` answers of ``method path``: the route runs, ``patch`` is merged into its data."""
        self._call("POST", "/_mock/tampers", {"method": method, "path": path, "patch": patch, "count": count})

    def event(self, payload: dict[str, Any], **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_mock/events", {"payload": payload, **options})
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_mock/state")
        return result

    def idle(self) -> None:
        self._call("POST", "/_mock/idle")

    def requests(self) -> list[dict[str, Any]]:
        return list(self.state()["requests"])


@contextmanager
def mock_kayle(log_dir: Path) -> Iterator[MockKayle]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.kayle_mock", "--port", str(port), "--api-key", API_KEY,
            "--readonly-key", READONLY_KEY]
    env = {name: value for name, value in os.environ.items() if not name.startswith("KAYLE_")}
    with running(argv, env, log_dir / "kayle-mock.log") as process:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/_mock/health", process=process)
        yield MockKayle(url)


def payload_like(template: dict[str, Any], event_id: str, session_id: str) -> dict[str, Any]:
    """A copy of a fixture payload under a new event id (one Kayle event per call)."""
    payload = copy.deepcopy(template)
    payload["metadata"]["event_id"] = event_id
    payload["metadata"]["verification_session_id"] = session_id
    return payload
