"""The interoperability vectors in ``tests/fixtures/``: deliveries made by an independent JOSE sender."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_TIME = 1767225600  # every vector was signed at 2026-01-01T00:00:00Z
FIXTURE_KID = "fixture-key-1"
OTHER_KID = "second-key"  # a generated key the tests hold beside the vectors' key, as after a rotation


@dataclass(frozen=True)
class Fixture:
    name: str
    headers: dict[str, str]
    body: bytes
    secret: str
    kid: str
    enc: str
    timestamp: int
    expected_plaintext: bytes
    expected_payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.expected_payload["metadata"]["event_id"])

    @property
    def type(self) -> str:
        return str(self.expected_payload["type"])


def load_fixtures() -> list[Fixture]:
    index = json.loads((FIXTURES / "index.json").read_text())
    found = []
    for entry in index["files"]:
        raw = json.loads((FIXTURES / entry["file"]).read_text(encoding="utf-8"))
        found.append(
            Fixture(
                name=entry["file"].removesuffix(".json"),
                headers=raw["headers"],
                body=raw["body"].encode("ascii"),
                secret=raw["secret"],
                kid=raw["kid"],
                enc=raw["enc"],
                timestamp=raw["timestamp"],
                expected_plaintext=raw["expected_plaintext"].encode("utf-8"),
                expected_payload=raw["expected_payload"],
            )
        )
    return found


def by_name(fixtures: list[Fixture], name: str) -> Fixture:
    return next(f for f in fixtures if f.name == name)
