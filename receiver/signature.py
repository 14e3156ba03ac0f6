"""``X-Kayle-Signature``: signing and verifying, side by side.

``v1 = hex(HMAC-SHA256(key=utf8(secret), msg=utf8(t) + b"." + raw_body))``.
The key is the whole ``whsec_...`` string, prefix included (it is not
base64-decoded as Standard Webhooks does). Several ``v1=`` entries may be sent;
any one matching any configured secret is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from receiver.errors import SignatureRejected

HEADER = "X-Kayle-Signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The lowercase hex ``v1`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value Kayle sends: ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def verify(header: str | None, body: bytes, secrets: Sequence[str], now: float, tolerance: int) -> int:
    """Check ``header`` against ``body``; return the signed timestamp or raise :class:`SignatureRejected`.

    The signature is checked first, then the timestamp, so a stale answer tells the
    operator that the sender knew the secret but its clock (or a replay) is off.
    """
    if header is None or not header.strip():
        raise SignatureRejected("signature_missing", f"the {HEADER} header is missing")
    timestamp, candidates = _parse(header)
    if not _matches(candidates, body, timestamp, secrets):
        raise SignatureRejected(
            "signature_mismatch", "no v1 signature matches the body with any configured signing secret"
        )
    if abs(now - timestamp) > tolerance:
        raise SignatureRejected(
            "timestamp_out_of_tolerance",
            f"the signature timestamp is more than {tolerance} s away from this server's clock",
        )
    return timestamp


def _parse(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            timestamps.append(value.strip())
        elif name == "v1":
            candidates.append(value.strip())
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureRejected("signature_malformed", f"{HEADER} must carry exactly one numeric t= value")
    well_formed = [c.lower() for c in candidates if _HEX_DIGEST.fullmatch(c)]
    if not well_formed:
        raise SignatureRejected("signature_malformed", f"{HEADER} carries no v1= value of 64 hex digits")
    return int(timestamps[0]), well_formed


def _matches(candidates: list[str], body: bytes, timestamp: int, secrets: Sequence[str]) -> bool:
    found = False
    for secret in secrets:
        expected = compute(secret, timestamp, body)
        for candidate in candidates:
            # Constant-time and without an early exit, so timing says nothing about which part matched.
            found |= hmac.compare_digest(expected, candidate)
    return found
