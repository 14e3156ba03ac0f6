"""Tracing and error reports seen from outside: spans a process printed, a Sentry ingest endpoint on
127.0.0.1, an OTLP/HTTP collector, and an import watch that records (or refuses) the optional packages."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kayle_webhooks.testing import SignedRequest, build_request, sample_payload
from tests.helpers.vectors import FIXTURE_KID, FIXTURES

#: The packages of the [otel] and [sentry] extras.
OPTIONAL = ("opentelemetry", "sentry_sdk")

_WATCH = '''
import importlib.abc, os, sys, traceback

class _Watch(importlib.abc.MetaPathFinder):
    """Records every import of the optional packages with the file that asked for it; refuses them when
    KAYLE_TEST_REFUSE_IMPORTS is set."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {optional!r}:
            with open(os.environ["KAYLE_TEST_IMPORT_LOG"], "a") as out:
                out.write(f"{{os.getpid()}} {{name}} {{_importer()}}\\n")
            if os.environ.get("KAYLE_TEST_REFUSE_IMPORTS"):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

def _importer():
    inside = ("<frozen importlib", __file__, *(os.sep + name + os.sep for name in {optional!r}))
    for frame in reversed(traceback.extract_stack()):
        if not any(part in frame.filename for part in inside):
            return frame.filename
    return "?"

sys.meta_path.insert(0, _Watch())
'''


def import_watch(directory: Path, refuse: bool) -> dict[str, str]:
    """Variables that make every Python process started with them (and its forks) record each import of
    :data:`OPTIONAL` in ``directory/imports.txt`` and, with ``refuse``, fail it as if not installed."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_WATCH.format(optional=OPTIONAL))
    watch = {"PYTHONPATH": str(directory), "KAYLE_TEST_IMPORT_LOG": str(directory / "imports.txt")}
    return {**watch, "KAYLE_TEST_REFUSE_IMPORTS": "1"} if refuse else watch


def imported(directory: Path) -> list[tuple[str, str]]:
    """(module, the file whose code imported it) of every import the watch saw."""
    path = directory / "imports.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(fields[1], fields[2]) for fields in (line.split(" ", 2) for line in lines)]


def spans_in(path: Path) -> list[dict[str, Any]]:
    """The spans the console exporter printed to ``path``, one JSON object a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]


def fixture_public_key() -> rsa.RSAPublicKey:
    private = serialization.load_pem_private_key((FIXTURES / "private.pem").read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return private.public_key()


def succeeded_delivery(secret: str) -> tuple[dict[str, Any], SignedRequest]:
    """A fresh ``verification.session.succeeded`` event with claims, signed now for the fixtures' key."""
    payload = sample_payload("verification.session.succeeded")
    return payload, build_request(payload, secret, fixture_public_key(), FIXTURE_KID)


@dataclass
class Received:
    """What an HTTP endpoint of the tests was sent: one (path, decompressed body) per request."""

    requests: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, path_part: str) -> list[bytes]:
        with self.lock:
            return [body for path, body in self.requests if path_part in path]


@contextmanager
def http_sink(status: int = 200) -> Iterator[tuple[str, Received]]:
    """An HTTP server on 127.0.0.1 that keeps every POST (gzip/deflate undone) and answers ``status``."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding == "br":
                import brotli  # type: ignore[import-not-found]  # the SDK only uses br when brotli is installed

                body = brotli.decompress(body)
            with received.lock:
                received.requests.append((self.path, body))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """The (item header, payload) pairs of a Sentry envelope (JSON payloads decoded)."""
    lines = body.split(b"\n")
    items = []
    index = 1  # line 0 is the envelope header
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        header = json.loads(lines[index])
        length = header.get("length")
        if length is None:
            payload = lines[index + 1]
            index += 2
        else:  # a payload of a given length may hold newlines
            rest = b"\n".join(lines[index + 1 :])
            payload, rest = rest[:length], rest[length + 1 :]
            lines, index = [b"", *rest.split(b"\n")], 1
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items


def sentry_events(received: Received) -> list[dict[str, Any]]:
    """The error and message events of every envelope received."""
    return [payload for body in received.bodies("/envelope/") for header, payload in envelope_items(body)
            if header.get("type") == "event"]
