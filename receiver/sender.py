"""Build and send deliveries exactly as Kayle does: the test sender behind ``send-test``,
the demo, the tests and the benchmarks, on the same signing and encryption code the
receiver checks against.
"""

from __future__ import annotations

import argparse
import json
import secrets as random_source
import string
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import jwe, signature
from receiver.settings import load_config

KNOWN_TYPES = (
    "verification.session.succeeded",
    "verification.session.failed",
    "verification.session.expired",
    "verification.session.cancelled",
)
_ALPHABET = string.ascii_lowercase + string.digits


def random_id(prefix: str, length: int = 64) -> str:
    return prefix + "".join(random_source.choice(_ALPHABET) for _ in range(length))


def sample_payload(event_type: str, event_id: str | None = None) -> dict[str, Any]:
    """A realistic payload of ``event_type`` (made-up person), keys in Kayle's order."""
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
class Delivery:
    """One HTTP request as Kayle sends it."""

    headers: dict[str, str]
    body: bytes

    @property
    def event_type(self) -> str:
        return self.headers["X-Kayle-Event"]


def encrypt_payload(payload: dict[str, Any], public_key: rsa.RSAPublicKey, kid: str, enc: str = "A256GCM") -> bytes:
    plaintext = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return jwe.encrypt(plaintext, public_key, kid, enc)


def sign_delivery(
    body: bytes, event_type: str, secret: str, timestamp: int | None = None, delivery_id: str | None = None
) -> Delivery:
    """Headers for ``body`` (a JWE), signed at ``timestamp`` (now by default): a retry is the same body re-signed."""
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/jose",
        "X-Kayle-Delivery-Id": delivery_id or random_id("whd_"),
        "X-Kayle-Event": event_type,
        "X-Kayle-Signature": signature.sign(secret, stamp, body),
    }
    return Delivery(headers, body)


def build_delivery(
    payload: dict[str, Any], secret: str, public_key: rsa.RSAPublicKey, kid: str, enc: str = "A256GCM"
) -> Delivery:
    return sign_delivery(encrypt_payload(payload, public_key, kid, enc), str(payload["type"]), secret)


def send_test_command(args: argparse.Namespace) -> int:
    config = load_config()
    kid = _newest_kid(config.keyring.describe())
    public_key = config.keyring[kid].public_key()
    types = [args.type] if args.type else list(KNOWN_TYPES)
    failures = 0
    with httpx.Client(timeout=15, follow_redirects=False) as http:
        for event_type in types:
            for _ in range(max(args.count, 1)):
                delivery = build_delivery(sample_payload(event_type), config.secrets[0], public_key, kid)
                try:
                    answer = http.post(args.url, content=delivery.body, headers=delivery.headers)
                except httpx.HTTPError as exc:
                    failures += 1
                    print(f"{event_type:<34} error    {type(exc).__name__}: {exc}")
                    continue
                if not answer.is_success:
                    failures += 1
                print(f"{event_type:<34} {answer.status_code:<8} {answer.text.strip()[:300]}")
    print(f"sent with kid {kid}; {failures} failed" if failures else f"sent with kid {kid}; all accepted")
    return 1 if failures else 0


def _newest_kid(keys: list[Any]) -> str:
    """The key Kayle would use: the most recently created file in KAYLE_KEY_DIR."""
    return str(max(keys, key=lambda info: (info.path.stat().st_mtime if info.path.exists() else 0, info.kid)).kid)

