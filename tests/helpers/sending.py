"""Sending as Kayle does: built events, retries of every non-2xx, concurrent senders."""

from __future__ import annotations

import functools
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from kayle_webhooks.testing import SignedRequest, encrypt_payload, sample_payload, sign_request
from workers.models import KNOWN_EVENT_TYPES

PATH = "/webhooks/kayle"
#: Idle kept-alive connections are dropped by the client before the receiver's 5 s keep-alive timeout could close
#: one as the client reuses it (a failed request that is nobody's fault).
KEEPALIVE_EXPIRY = 2.0




def sender(connections: int = 10) -> httpx.Client:
    """A client for deliveries to a local receiver. The deliveries go over plain HTTP, so all clients share one
    TLS context: each new client would otherwise load the CA bundle, about 20 ms of CPU, when tests make hundreds."""
    return httpx.Client(timeout=15, limits=client_limits(connections), verify=_tls())


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def client_limits(connections: int = 10) -> httpx.Limits:
    return httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_EXPIRY
    )


#: A sample payload and the request that delivers it.
Event = tuple[dict[str, Any], SignedRequest]


def make_events(count: int, public_key: rsa.RSAPublicKey, kid: str, secret: str) -> list[Event]:
    """``count`` distinct events, the known types in turn."""
    events = []
    for index in range(count):
        payload = sample_payload(KNOWN_EVENT_TYPES[index % len(KNOWN_EVENT_TYPES)])
        body = encrypt_payload(payload, public_key, kid)
        events.append((payload, sign_request(body, payload["type"], secret)))
    return events


def event_ids(events: list[Event]) -> list[str]:
    return [payload["metadata"]["event_id"] for payload, _ in events]


def resigned(request: SignedRequest, secret: str) -> SignedRequest:
    """Kayle's retry of ``request``: the same body and delivery id, signed now."""
    return sign_request(request.body, request.event_type, secret, delivery_id=request.headers["X-Kayle-Delivery-Id"])


def post(client: httpx.Client, url: str, request: SignedRequest) -> int:
    """One send as Kayle makes it; a refused connection or a timeout counts as status 0 (a failure)."""
    try:
        return client.post(url, content=request.body, headers=request.headers).status_code
    except httpx.HTTPError:
        return 0


def send_until_2xx(
    http: httpx.Client, url: str, request: SignedRequest, secret: str, answers: list[int], tries: int = 2000
) -> str:
    """Send like Kayle: every non-2xx (or failed connection) is retried, re-signed, until it is accepted.
    Returns the answer's ``status`` (accepted or duplicate); every status seen goes into ``answers``."""
    for _ in range(tries):
        try:
            answer = http.post(url, content=request.body, headers=request.headers)
            answers.append(answer.status_code)
            if answer.is_success:
                return str(answer.json()["status"])
            assert answer.status_code == 503, (answer.status_code, answer.text[:200])
        except httpx.HTTPError:
            answers.append(0)
        time.sleep(0.05)
        request = resigned(request, secret)
    raise AssertionError("a delivery was never accepted")


def send_all(
    url: str, events: list[Event], secret: str, answers: list[int], outcomes: dict[str, str], senders: int = 8
) -> None:
    """``senders`` concurrent senders; each retries its delivery until it is answered 2xx, as Kayle does.
    ``outcomes`` maps each event id to its final answer."""

    def one(item: Event) -> None:
        payload, request = item
        with sender(1) as http:
            outcomes[payload["metadata"]["event_id"]] = send_until_2xx(http, url, request, secret, answers)

    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(one, events))
