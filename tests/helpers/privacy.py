"""Claim values to look for, and where to look: Redis (every key and value, decompressed), logs, output."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from kayle_webhooks.testing import sample_payload
from tests.helpers.vectors import Fixture


def claim_values(fixtures: list[Fixture]) -> set[str]:
    """Every claim value sent in the vectors that is distinctive enough to search for."""
    values: set[str] = set()
    for fixture in fixtures:
        values |= claims_of(fixture.expected_payload, shortest=4)
    return values


def sample_claim_values() -> set[str]:
    """The distinctive claim values :func:`kayle_webhooks.testing.sample_payload` sends (its made-up person)."""
    claims = sample_payload("verification.session.succeeded")["data"]["claims"]
    return {v for k, v in claims.items() if isinstance(v, str) and len(v) >= 6 and not k.startswith("kayle_")}


def claims_of(payload: dict[str, Any], shortest: int = 6) -> set[str]:
    """The string claim values of one payload at least ``shortest`` characters long."""
    claims = payload.get("data", {}).get("claims") or {}
    return {value for value in claims.values() if isinstance(value, str) and len(value) >= shortest}


def redis_blobs(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key and value in the database, with what zlib-compressed values (RQ's) hold."""
    keys = list(client.scan_iter(count=1000))
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.type(key)
            kinds = [k.decode() for k in pipe.execute()]
            for key, kind in zip(chunk, kinds, strict=True):
                _READERS.get(kind, lambda pipe, key: pipe.exists(key))(pipe, key)
            contents = pipe.execute()
        for key, content in zip(chunk, contents, strict=True):
            name = key.decode("utf-8", "replace")
            yield name, key
            for value in _flatten(content):
                for variant in _variants(value):
                    yield name, variant


_READERS = {
    "string": lambda pipe, key: pipe.get(key),
    "hash": lambda pipe, key: pipe.hgetall(key),
    "list": lambda pipe, key: pipe.lrange(key, 0, -1),
    "set": lambda pipe, key: pipe.smembers(key),
    "zset": lambda pipe, key: pipe.zrange(key, 0, -1),
    "stream": lambda pipe, key: pipe.xrange(key),
}


def _flatten(content: object) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
    elif isinstance(content, dict):
        for field, value in content.items():
            yield from _flatten(field)
            yield from _flatten(value)
    elif isinstance(content, (list, tuple, set)):
        for item in content:
            yield from _flatten(item)


def _variants(blob: bytes) -> list[bytes]:
    """The blob, and what it holds if it is zlib data or base64 of zlib data."""
    found = [blob]
    for decode in (lambda b: b, lambda b: base64.b64decode(b, validate=True)):
        try:
            found.append(zlib.decompress(decode(blob)))
        except (binascii.Error, zlib.error, ValueError):
            continue
    return found


def leaked_claims(text: bytes | str, values: Iterable[str]) -> list[str]:
    """The claim values found in ``text`` (as UTF-8 or JSON-escaped)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    found = []
    for value in values:
        forms = {value.encode("utf-8"), json.dumps(value).strip('"').encode("ascii")}
        if any(form in data for form in forms):
            found.append(value)
    return found


def leaks(
    values: Iterable[str], client: redis.Redis | None = None, files: Iterable[Path] = (), texts: Iterable[str] = ()
) -> list[str]:
    """Where claim values appear: ``"redis <key>: <value>"``, ``"<file name>: <value>"``, ``"output: <value>"``."""
    wanted = list(values)
    found: list[str] = []
    if client is not None:
        for key, blob in redis_blobs(client):
            found += [f"redis {key}: {v}" for v in leaked_claims(blob, wanted)]
    for path in files:
        if path.exists():
            found += [f"{path.name}: {v}" for v in leaked_claims(path.read_bytes(), wanted)]
    for text in texts:
        found += [f"output: {v}" for v in leaked_claims(text, wanted)]
    return sorted(set(found))


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each captured record's message with its structured fields (what the JSON lines would carry)."""
    return [f"{r.getMessage()} {getattr(r, 'kayle_fields', {})}" for r in caplog.records]
