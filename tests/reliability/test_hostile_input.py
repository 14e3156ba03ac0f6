"""Hostile input: generated headers and bodies, validly signed bodies with mutated JWE segments and
headers, authenticated garbage payloads, oversized and slow bodies.

Properties: never a 5xx (no Redis outage here), never an exception out of the app, never an
accepted forgery (anything answered 2xx decrypts to a payload that was genuinely sent).
In process against the ASGI app for volume (over 20,000 generated requests), plus a slice over
real sockets against ``kayle-webhooks serve``. Hypothesis explores the requests' structure; each of
its examples also seeds a few cheap mutations of what it drew (hypothesis' own cost per example is
several times a request's), so the volume stays affordable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from receiver import jwe, signature
from receiver.app import create_app
from receiver.errors import RejectionCode
from receiver.jobs import job_id
from receiver.settings import Config
from tests.helpers.privacy import claim_values, leaks
from tests.helpers.processes import command, free_port, running, subprocess_env, wait_for_http
from tests.helpers.receiver import Answer, call_asgi, header_list
from tests.helpers.sending import PATH, sender
from tests.helpers.vectors import FIXTURE_KID, FIXTURE_TIME, Fixture

REJECTED = {400, 408, 413, 422}
B64URL = string.ascii_letters + string.digits + "-_"
COUNTS: dict[str, int] = {}

pytestmark = pytest.mark.slow


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a property run ``examples`` times (no deadline: the machine is shared)."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def app(config: Config, redis_client: redis.Redis, loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    application = create_app(config, clock=lambda: float(FIXTURE_TIME))
    context = application.router.lifespan_context(application)
    loop.run_until_complete(context.__aenter__())
    yield application
    loop.run_until_complete(context.__aexit__(None, None, None))


def send(loop: asyncio.AbstractEventLoop, app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
    return loop.run_until_complete(call_asgi(app, headers, [body]))


def signed(fixture: Fixture, body: bytes, extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = {**fixture.headers, signature.HEADER: signature.sign(fixture.secret, FIXTURE_TIME, body), **(extra or {})}
    return header_list(headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    """``count`` variants of ``data``, each a byte flipped, a byte inserted or removed, or a cut, by ``seed``."""
    rng = random.Random(seed)
    variants = []
    for _ in range(count):
        raw = bytearray(data)
        position = rng.randrange(len(raw) + 1)
        kind = rng.randrange(4) if raw else 1
        if kind == 0 and position < len(raw):
            raw[position] ^= 1 << rng.randrange(8)
        elif kind == 1:
            raw.insert(position, rng.randrange(256))
        elif kind == 2 and position < len(raw):
            del raw[position]
        else:
            del raw[position:]
        variants.append(bytes(raw))
    return variants


# --- strategies ----------------------------------------------------------------------------------------------------

latin1 = st.text(st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"), max_size=300)
signature_values = st.one_of(
    latin1,
    st.builds(lambda t, v: f"t={t},v1={v}", st.integers(-(10**15), 10**15), st.text("0123456789abcdef", max_size=80)),
    st.builds(lambda t, vs: f"t={t}," + ",".join(f"v1={v}" for v in vs),
              st.just(FIXTURE_TIME), st.lists(st.text("0123456789abcdef", min_size=64, max_size=64), max_size=5)),
    st.sampled_from(["", "t=", "v1=", "t=1,t=2", ",,,", "t=1767225600", "t=1767225600,v1=" + "0" * 64]),
)
header_names = st.sampled_from(
    ["x-kayle-signature", "x-kayle-event", "x-kayle-delivery-id", "content-type", "content-length",
     "transfer-encoding", "x-forwarded-for", "host", "x-random"]
)
bodies = st.one_of(st.binary(max_size=1500), st.text(max_size=1000).map(lambda t: t.encode("utf-8", "surrogatepass")),
                   st.text(B64URL + ".", max_size=2000).map(str.encode))


@st.composite
def arbitrary_request(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], bytes]:
    headers = draw(st.lists(st.tuples(header_names, latin1), max_size=8))
    if draw(st.booleans()):
        headers.append(("x-kayle-signature", draw(signature_values)))
    return [(n.encode(), v.encode("latin-1")) for n, v in headers], draw(bodies)


HEADER_MEMBERS = st.dictionaries(
    st.sampled_from(["alg", "enc", "kid", "zip", "crit", "typ", "cty", "jwk", "jku", "x5u", "epk", "p2s", "iv", "tag"]),
    st.one_of(
        st.sampled_from(["RSA-OAEP-256", "RSA-OAEP", "RSA1_5", "dir", "none", "A256KW", "A256GCM", "A128GCM",
                         "A192GCM", "A128CBC-HS256", "DEF", FIXTURE_KID, "second-key", ""]),
        st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3), st.text(max_size=30),
    ),
    max_size=7,
)


@st.composite
def mutated_jwe(draw: st.DrawFn, body: bytes) -> bytes:
    """The fixture JWE with one or two mutations of its segments or protected header."""
    segments = body.decode().split(".")
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["replace", "flip", "truncate", "extend", "header", "count", "noise", "swap"]))
        index = draw(st.integers(0, len(segments) - 1)) if segments else 0
        if kind == "replace" and segments:
            segments[index] = draw(st.text(B64URL, max_size=600))
        elif kind == "flip" and segments and segments[index]:
            position = draw(st.integers(0, len(segments[index]) - 1))
            char = draw(st.sampled_from(B64URL))
            segments[index] = segments[index][:position] + char + segments[index][position + 1:]
        elif kind == "truncate" and segments:
            segments[index] = segments[index][: draw(st.integers(0, max(0, len(segments[index]) - 1)))]
        elif kind == "extend" and segments:
            segments[index] += draw(st.text(B64URL, min_size=1, max_size=40))
        elif kind == "header" and segments:
            header = draw(HEADER_MEMBERS)
            if draw(st.booleans()):
                header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": FIXTURE_KID, **header}
            segments[0] = b64(json.dumps(header).encode())
        elif kind == "count":
            segments = [*segments, draw(st.text(B64URL, max_size=20))] if draw(st.booleans()) else segments[:-1]
        elif kind == "noise" and segments:
            segments[index] += draw(st.sampled_from([" ", "=", "==", "+", "/", "\t", "é", "\x00", "%3D"]))
        elif kind == "swap" and len(segments) > 2:
            other = draw(st.integers(0, len(segments) - 1))
            segments[index], segments[other] = segments[other], segments[index]
    return ".".join(segments).encode("utf-8")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def authenticated_payload(draw: st.DrawFn) -> dict[str, Any] | Any:
    """Whatever Kayle might (wrongly or in a future version) encrypt and sign: envelopes good and bad."""
    if draw(st.booleans()):
        return draw(json_values)
    metadata = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3))
    if draw(st.booleans()):
        ids = st.one_of(st.text(B64URL, min_size=1, max_size=60), st.text(max_size=20), json_values)
        metadata["event_id"] = draw(ids)
    payload = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3))
    payload["metadata"] = metadata
    if draw(st.booleans()):
        payload["type"] = draw(st.one_of(st.text(string.ascii_lowercase + "._", min_size=1, max_size=40), json_values))
    return payload


# --- the properties ------------------------------------------------------------------------------------------------


def test_arbitrary_headers_and_bodies_are_rejected_without_a_crash(app, loop, redis_client):
    count = 0

    @fuzz(1750)
    @given(arbitrary_request(), st.integers(0, 2**32))
    def check(request: tuple[list[tuple[bytes, bytes]], bytes], seed: int) -> None:
        nonlocal count
        headers, body = request
        for variant in [body, *mutations(body, seed, 3)]:
            count += 1
            answer = send(loop, app, headers, variant)
            assert answer.status in REJECTED, (answer.status, answer.body[:200])
            assert "error" in answer.json()

    check()
    assert count >= 7000
    assert redis_client.dbsize() == 0
    # Outcome labels are our own codes, whatever the requests carried.
    outcomes = {s.labels["outcome"] for m in REGISTRY.collect() for s in m.samples if m.name == "kayle_deliveries"}
    assert outcomes and outcomes <= {"accepted", "duplicate", *get_args(RejectionCode)}


def test_validly_signed_mutated_jwes_are_never_accepted_as_forgeries(app, loop, fixtures, redis_client, config, caplog):
    genuine = {f.event_id: f.expected_plaintext for f in fixtures}
    count = 0

    @fuzz(2500)
    @given(st.sampled_from(fixtures), st.data(), st.integers(0, 2**32))
    def check(fixture: Fixture, data: st.DataObject, seed: int) -> None:
        nonlocal count
        mutated = data.draw(mutated_jwe(fixture.body))
        for body in [mutated, *mutations(mutated, seed, 1)]:
            count += 2
            # The mutated body riding on the genuine delivery's signature (a captured delivery, tampered with):
            if body != fixture.body:
                assert send(loop, app, header_list(fixture.headers), body).status == 400
            # The mutated body validly signed (as if the signing secret leaked): the JWE must still protect it.
            answer = send(loop, app, signed(fixture, body), body)
            assert answer.status in REJECTED | {200}, (answer.status, answer.body[:200])
            if answer.status == 200:  # only a JWE that still decrypts to what Kayle sent may pass
                event_id = answer.json()["event_id"]
                stored = redis_client.hget(f"rq:job:{job_id(event_id)}", "data")
                assert stored is not None
                plaintext = jwe.decrypt(jwe.parse(body), config.keyring)
                assert plaintext == genuine[event_id]

    check()
    assert count >= 10000  # requests
    assert leaks(claim_values(fixtures), redis_client, texts=[caplog.text]) == []


def test_authenticated_garbage_payloads_are_422_or_accepted_never_5xx(app, loop, fixtures, config):
    fixture = fixtures[0]
    public = config.keyring[FIXTURE_KID].public_key()
    count = 0

    @fuzz(1000)
    @given(authenticated_payload(), st.integers(0, 2**32))
    def check(payload: Any, seed: int) -> None:
        nonlocal count
        routable = (
            isinstance(payload, dict)
            and isinstance(payload.get("type"), str)
            and isinstance(payload.get("metadata"), dict)
            and isinstance(payload["metadata"].get("event_id"), str)
        )
        plaintext = json.dumps(payload).encode()
        # The payload, and its plaintext damaged (no longer JSON, or JSON of another shape), each authenticated.
        damaged = [(variant, True) for variant in mutations(plaintext, seed, 2)]
        for variant, may_pass in [(plaintext, routable), *damaged]:
            count += 1
            body = jwe.encrypt(variant, public, FIXTURE_KID)
            answer = send(loop, app, signed(fixture, body), body)
            assert answer.status in ({200, 422} if may_pass else {422}), (answer.status, answer.body[:200])

    check()
    assert count >= 3000


@pytest.mark.parametrize("plaintext", [b"\xff\xfe not utf-8", b"", b"null", b"[]", b"1e999999", b'{"type": 1}'])
def test_authenticated_non_json_or_odd_plaintext_is_422(app, loop, fixtures, config, plaintext):
    public = config.keyring[FIXTURE_KID].public_key()
    body = jwe.encrypt(plaintext, public, FIXTURE_KID)
    assert send(loop, app, signed(fixtures[0], body), body).status == 422


# Deep enough to exhaust the JSON parser's recursion, small enough to stay under the body cap once encrypted.
ROUTABLE_BUT_DEEP = b'{"type":"x.y","metadata":{"event_id":"evt_deep"},"data":' + b"[" * 1_000 + b"]" * 1_000 + b"}"


@pytest.mark.parametrize(
    "plaintext", [b"[" * 1_000 + b"]" * 1_000, ROUTABLE_BUT_DEEP, b"[" * 100_000, b'{"a":' * 30_000]
)
def test_authenticated_deeply_nested_json_is_422(app, loop, fixtures, config, plaintext):
    public = config.keyring[FIXTURE_KID].public_key()
    body = jwe.encrypt(plaintext, public, FIXTURE_KID)
    answer = send(loop, app, signed(fixtures[0], body), body)
    assert (answer.status, answer.json()["error"]["code"]) == (422, "payload_invalid")


def nested_header(fixture: Fixture, depth: int) -> bytes:
    """The fixture's JWE with a protected header nested ``depth`` deep (closed when that fits the body cap)."""
    nesting = "[" * depth + ("]" * depth if depth <= 50_000 else "")
    header = '{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"%s","typ":%s}' % (FIXTURE_KID, nesting)  # noqa: UP031
    return ".".join([b64(header.encode()), *fixture.body.decode().split(".")[1:]]).encode()


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deeply_nested_jwe_header_validly_signed_is_400_jwe_malformed(app, loop, fixtures, depth):
    body = nested_header(fixtures[0], depth)
    answer = send(loop, app, signed(fixtures[0], body), body)
    assert (answer.status, answer.json()["error"]["code"]) == (400, "jwe_malformed")


def test_oversized_bodies_are_413_whether_declared_or_streamed(app, loop, fixtures, config):
    limit = config.settings.max_body_bytes
    big = b"A" * (limit + 1)
    declared = header_list({**fixtures[0].headers, "Content-Length": str(len(big))})
    assert send(loop, app, declared, big).status == 413
    undeclared = header_list(fixtures[0].headers)
    chunks = [b"A" * 65536] * (limit // 65536 + 2)
    assert loop.run_until_complete(call_asgi(app, undeclared, chunks)).status == 413
    lying = header_list({**fixtures[0].headers, "Content-Length": "10"})
    assert loop.run_until_complete(call_asgi(app, lying, chunks)).status == 413


def test_a_slow_body_is_cut_off_with_408(config, fixtures, loop, redis_client, monkeypatch):
    monkeypatch.setenv("KAYLE_BODY_TIMEOUT_SECONDS", "0.3")
    from receiver.settings import load_config

    slow_app = create_app(load_config(), clock=lambda: float(FIXTURE_TIME))
    fixture = fixtures[0]
    chunks = [fixture.body[i:i + 100] for i in range(0, len(fixture.body), 100)]
    answer = loop.run_until_complete(call_asgi(slow_app, header_list(fixture.headers), chunks, pause=0.1))
    assert answer.status == 408
    truncated = loop.run_until_complete(call_asgi(slow_app, header_list(fixture.headers), [fixture.body[:50]]))
    assert truncated.status == 400
    assert redis_client.dbsize() == 0


# --- a slice over real sockets against ``kayle-webhooks serve`` ------------------------------------------------------


def raw_exchange(port: int, data: bytes, pause_after: float = 0.0, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if pause_after:
            asyncio.run(asyncio.sleep(pause_after))
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_a_real_receiver_survives_a_hostile_slice_and_stays_healthy(env, fixtures, tmp_path: Path, redis_client):
    port = free_port()
    log_path = tmp_path / "serve.log"
    serve_env = subprocess_env(env, KAYLE_TOLERANCE_SECONDS=str(10**10), KAYLE_BODY_TIMEOUT_SECONDS="1")
    statuses: list[int] = []
    with running(command("serve", "--port", str(port)), serve_env, log_path) as process:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        url = f"http://127.0.0.1:{port}{PATH}"
        with sender() as http:

            @fuzz(300)
            @given(st.sampled_from(fixtures), st.data())
            def check(fixture: Fixture, data: st.DataObject) -> None:
                body = data.draw(mutated_jwe(fixture.body))
                headers = {**fixture.headers, signature.HEADER: signature.sign(fixture.secret, FIXTURE_TIME, body)}
                try:
                    answer = http.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    return  # the server may refuse a malformed request outright; it must stay up (checked below)
                statuses.append(answer.status_code)
                assert answer.status_code < 500, answer.text[:200]

            check()
            # Oversized, declared and chunked; a slow body; a malformed request line.
            big = b"A" * (300 * 1024)
            assert http.post(url, content=big, headers=fixtures[0].headers).status_code == 413
            assert http.post(url, content=iter([big[:65536]] * 5), headers=fixtures[0].headers).status_code == 413
            head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                    f"X-Kayle-Signature: {fixtures[0].headers['X-Kayle-Signature']}\r\n\r\n").encode()
            slow = raw_exchange(port, head + b"abc", pause_after=2.5)
            assert slow.startswith(b"HTTP/1.1 408"), slow[:100]
            garbage = raw_exchange(port, b"\x16\x03\x01\x02\x00GARBAGE\r\n\r\n", timeout=5)
            deep = nested_header(fixtures[0], 100_000)
            headers = {**fixtures[0].headers, signature.HEADER: signature.sign(fixtures[0].secret, FIXTURE_TIME, deep)}
            assert http.post(url, content=deep, headers=headers).status_code == 400
            assert not garbage.startswith(b"HTTP/1.1 5"), garbage[:100]
            assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            genuine = http.post(url, content=fixtures[1].body, headers=fixtures[1].headers)
            assert genuine.status_code == 200
        assert process.poll() is None
    assert len(statuses) >= 250
    needles = claim_values(fixtures)
    assert leaks(needles, redis_client, [log_path]) == []
