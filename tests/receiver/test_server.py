"""``kayle-webhooks serve`` as a real process: limits on the wire, configuration errors, and load."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from kayle_webhooks.testing import SignedRequest, encrypt_payload, sample_payload, sign_request
from receiver.jobs import job_id
from receiver.keyring import load_private_key
from tests.helpers.processes import PATIENCE, command, free_port, running, serving, wait_for_http, wait_until
from tests.helpers.sending import PATH, client_limits, resigned
from tests.helpers.vectors import FIXTURE_KID, FIXTURES

pytestmark = pytest.mark.slow


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redis_client: redis.Redis) -> Iterator[str]:
    import os

    port = free_port()
    environment = {**os.environ, **env}
    with running(command("serve", "--port", str(port)), environment, tmp_path / "serve.log") as process:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def public_key():
    return load_private_key(FIXTURES / "private.pem").public_key()


def fresh(payload: dict, secret: str, public_key) -> SignedRequest:
    return sign_request(encrypt_payload(payload, public_key, FIXTURE_KID), payload["type"], secret)


def test_a_body_over_the_cap_is_refused_before_it_is_all_sent(server: str, env: dict[str, str]) -> None:
    host, port = server.removeprefix("http://").split(":")
    for declared in (True, False):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            length = "Content-Length: 10485760\r\n" if declared else "Transfer-Encoding: chunked\r\n"
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{length}X-Kayle-Signature: t=1,v1=00\r\n\r\n".encode())
            chunk = b"a" * 65536
            sent = 0
            answer = b""
            sock.settimeout(0.2)
            # Send 320 KiB of a 10 MiB body, then stop: the answer must come without the rest.
            while sent < 320 * 1024:
                sock.sendall(chunk if declared else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            sock.settimeout(10)
            try:
                while b"\r\n\r\n" not in answer:
                    data = sock.recv(4096)
                    if not data:
                        break
                    answer += data
            except ConnectionResetError:
                pass
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_configuration_errors_stop_start_up_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    import os

    small = tmp_path / "small"
    small.mkdir()
    from cryptography.hazmat.primitives.asymmetric import rsa

    from kayle_webhooks.keys import pem

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    (small / "weak.pem").write_bytes(pem(weak))
    (tmp_path / "notakey").mkdir()
    (tmp_path / "notakey" / "k.pem").write_text("hello")
    cases = {
        "KAYLE_SIGNING_SECRETS": ({"KAYLE_SIGNING_SECRETS": ""}, "no signing secret"),
        "KAYLE_SIGNING_SECRETS prefix": ({"KAYLE_SIGNING_SECRETS": "abc"}, "whsec_"),
        "KAYLE_KEY_DIR": ({"KAYLE_KEY_DIR": str(tmp_path / "missing")}, "not a directory"),
        "KAYLE_KEY_DIR small": ({"KAYLE_KEY_DIR": str(small)}, "1024 bits"),
        "KAYLE_KEY_DIR bad": ({"KAYLE_KEY_DIR": str(tmp_path / "notakey")}, "not a PEM private key"),
        "KAYLE_TOLERANCE_SECONDS": ({"KAYLE_TOLERANCE_SECONDS": "soon"}, "integer"),
        "KAYLE_REDIS_URL": ({"KAYLE_REDIS_URL": "http://x"}, "redis://"),
        "KAYLE_DECRYPT_THREADS": ({"KAYLE_DECRYPT_THREADS": "-1"}, "greater than or equal to 0"),
        "KAYLE_MAX_CONNECTIONS": ({"KAYLE_MAX_CONNECTIONS": str(10**9)}, "ulimit -n"),
    }
    for label, (override, fragment) in cases.items():
        variable = label.split()[0]
        result = subprocess.run(
            command("serve", "--port", str(free_port())),
            env={**os.environ, **env, **override},
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (label, result.stderr)
        assert len(lines) == 1, (label, result.stderr)
        assert lines[0].startswith(f"kayle-webhooks: {variable}:"), lines[0]
        assert fragment in lines[0], lines[0]
        assert "Traceback" not in result.stderr


async def _send_all(url: str, requests: list[SignedRequest], concurrency: int) -> list[int]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=PATIENCE, limits=client_limits(concurrency)) as http:

        async def send(request: SignedRequest) -> int:
            async with limit:
                answer = await http.post(url, content=request.body, headers=request.headers)
                return answer.status_code

        return await asyncio.gather(*(send(r) for r in requests))


def test_2000_deliveries_with_20_percent_duplicates_at_concurrency_16(
    server: str, env: dict[str, str], redis_client: redis.Redis, public_key
) -> None:
    secret = env["KAYLE_SIGNING_SECRETS"]
    rng = random.Random(7)
    payloads = [sample_payload(rng.choice(["verification.session.succeeded", "x.future"])) for _ in range(1600)]
    uniques = [fresh(payload, secret, public_key) for payload in payloads]
    duplicates = []
    for n in range(400):
        index = rng.randrange(len(uniques))
        if n % 2:  # Kayle's retry: same body, new signature
            duplicates.append(resigned(uniques[index], secret))
        else:  # the same event delivered again under another delivery id, encrypted anew
            duplicates.append(fresh(payloads[index], secret, public_key))
    batch = uniques + duplicates
    rng.shuffle(batch)
    statuses = asyncio.run(_send_all(server + PATH, batch, 16))
    assert [s for s in statuses if s >= 500] == []
    assert statuses.count(200) == 2000
    job_ids = Queue("kayle", connection=redis_client).job_ids
    assert len(job_ids) == len(set(job_ids)) == 1600
    assert set(job_ids) == {job_id(p["metadata"]["event_id"]) for p in payloads}


def test_a_client_gone_mid_body_is_an_outcome_logged_at_info_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nX-Kayle-Signature: t=1,v1=00\r\n\r\n"
    with serving(env, tmp_path / "serve.log") as receiver:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
                sock.sendall(head.encode() + b"a" * 100)  # and the other 4900 bytes never come

        def gone() -> float:
            text = httpx.get(receiver.admin_url + "/metrics", timeout=10).text
            return _sample(text, "kayle_deliveries_total", outcome="client_gone")

        wait_until(lambda: gone() == 3, "three client_gone outcomes in /metrics")
    text = receiver.log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    outcomes = [line for line in lines if line.get("outcome") == "client_gone"]
    assert [(line["level"], line["status"]) for line in outcomes] == [("info", 499)] * 3
    assert [line for line in lines if line["level"] == "error"] == []
    assert "Traceback" not in text and "ClientDisconnect" not in text


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0
