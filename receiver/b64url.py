"""Base64url without padding (RFC 7515 §2), strict on input."""

from __future__ import annotations

import base64
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """Raises ``ValueError`` on anything but unpadded base64url."""
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_int(value: int) -> str:
    """A non-negative integer as JWK members carry it (big-endian, shortest form)."""
    return encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def decode_int(text: str) -> int:
    return int.from_bytes(decode(text), "big")
