"""The testing kit: deliveries built and sent exactly as Kayle does, on the receiver's own signing and
encryption code. ``send-test``, the demo, the tests and the benchmarks use it."""

from __future__ import annotations

import json
import secrets as random_source
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import jwe, signature

_ALPHABET = string.ascii_lowercase + string.digits


def random_id(prefix: str, length: int = 64) -> str:
    return prefix + "".join(random_source.choice(_ALPHABET) for _ in range(length))


def sample_payload(event_type: str, event_id: str | None = None) -> dict[str, Any]:
    """A realistic payload of ``event_type`` (a made-up person), keys in Kayle's order."""
    data: dict[str, Any]
    if event_type == "verification.session.succeeded":
        claims: dict[str, str | bool | None] = {
            "age_over_18": True,
            "date_of_birth": "1991-04-17",
            "document_expiry_date": "2031-08-02",
            "document_number": "X" + "".join(random_source.choice(string.digits) for _ in range(8)),
            "document_type_code": "P",
            "family_name": "Okonkwo-Lindqvist",
            "given_names": "Ada Maren",
            "issuing_country_code": "NLD",
            "kayle_document_id": random_source.token_hex(32),
            "kayle_human_id": random_source.token_hex(32),
            "nationality_code": "NLD",
            "sex_marker": "X",
        }
        data = {"claims": claims, "selected_field_keys": sorted(claims)}
    elif event_type == "verification.session.failed":
        data = {"failure_code": "liveness_failed", "nfc_tries_used": 1, "liveness_tries_used": 3}
    elif event_type == "verification.session.cancelled":
        data = {"outcome": "not_verified", "reason": "cancelled", "nfc_tries_used": 0, "liveness_tries_used": 0}
    else:
        data = {}
    return {
        "data": data,
        "metadata": {
            "contract_version": 1,
            "event_id": event_id or random_id("evt_"),
            "verification_session_id": random_id("vs_"),
        },
        "type": event_type,
    }


@dataclass(frozen=True)
class SignedRequest:
    """One HTTP request as Kayle sends it: headers and the JWE body."""

    headers: dict[str, str]
    body: bytes

    @property
    def event_type(self) -> str:
        return self.headers["X-Kayle-Event"]


def encrypt_payload(payload: dict[str, Any], public_key: rsa.RSAPublicKey, kid: str, enc: str = "A256GCM") -> bytes:
    plaintext = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return jwe.encrypt(plaintext, public_key, kid, enc)


def sign_request(
    body: bytes, event_type: str, secret: str, timestamp: int | None = None, delivery_id: str | None = None
) -> SignedRequest:
    """Headers for ``body`` (a JWE), signed at ``timestamp`` (now by default): a retry is the same body re-signed."""
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/jose",
        "X-Kayle-Delivery-Id": delivery_id or random_id("whd_"),
        "X-Kayle-Event": event_type,
        "X-Kayle-Signature": signature.sign(secret, stamp, body),
    }
    return SignedRequest(headers, body)


def build_request(
    payload: dict[str, Any], secret: str, public_key: rsa.RSAPublicKey, kid: str, enc: str = "A256GCM"
) -> SignedRequest:
    return sign_request(encrypt_payload(payload, public_key, kid, enc), str(payload["type"]), secret)


@dataclass(frozen=True)
class Sent:
    """What became of one request: the receiver's status and answer, or the transport error (status 0)."""

    event_type: str
    status: int
    answer: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def send_samples(
    url: str, types: list[str], secret: str, public_key: rsa.RSAPublicKey, kid: str, count: int, repeat: int
) -> Iterator[Sent]:
    """``count`` sample events of each type, each sent ``repeat`` times (the same event, freshly signed)."""
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        for event_type in types:
            for _ in range(count):
                body = encrypt_payload(sample_payload(event_type), public_key, kid)
                delivery_id = random_id("whd_")
                for _ in range(repeat):  # a retry as Kayle makes it: the same body and delivery id, signed anew
                    yield _post(http, url, sign_request(body, event_type, secret, delivery_id=delivery_id))


def _post(http: httpx.Client, url: str, request: SignedRequest) -> Sent:
    try:
        answer = http.post(url, content=request.body, headers=request.headers)
    except httpx.HTTPError as exc:
        return Sent(request.event_type, 0, f"{type(exc).__name__}: {exc}")
    return Sent(request.event_type, answer.status_code, answer.text.strip()[:300])
