"""Compact JWE (RFC 7516) as Kayle uses it: encrypting and decrypting, side by side.

Allow-list: ``alg`` RSA-OAEP-256 (SHA-256, MGF1-SHA-256), ``enc`` A128GCM,
A192GCM or A256GCM, a ``kid``; no other protected-header member changes how the
message is processed (``typ`` and ``cty`` are informational and tolerated).
Everything else (``zip``, ``crit``, ``dir``, ``RSA1_5``, embedded keys...) is
rejected before any private-key operation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from receiver import b64url
from receiver.errors import JweRejected

ALG = "RSA-OAEP-256"
CEK_BYTES = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
TOLERATED_MEMBERS = frozenset({"alg", "enc", "kid", "typ", "cty"})
IV_BYTES = 12
TAG_BYTES = 16
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True)
class Jwe:
    """A compact JWE split and checked against the allow-list, not yet decrypted."""

    protected: str
    kid: str
    enc: str
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


def parse(compact: bytes) -> Jwe:
    """Split ``compact`` and enforce the header allow-list; raise :class:`JweRejected`."""
    try:
        text = compact.decode("ascii")
    except UnicodeDecodeError:
        raise JweRejected("jwe_malformed", "the body is not a compact JWE (non-ASCII bytes)") from None
    segments = text.strip().split(".")
    if len(segments) != 5:
        raise JweRejected("jwe_malformed", "the body is not a compact JWE (five base64url segments)")
    try:
        header_bytes, encrypted_key, iv, ciphertext, tag = (b64url.decode(s) for s in segments)
        header = json.loads(header_bytes)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise JweRejected("jwe_malformed", "a JWE segment is not valid base64url or the header is not JSON") from None
    if not isinstance(header, dict):
        raise JweRejected("jwe_malformed", "the JWE protected header is not a JSON object")
    _check_header(header)
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise JweRejected("jwe_malformed", "the JWE IV must be 96 bits and its tag 128 bits")
    return Jwe(segments[0], header["kid"], header["enc"], encrypted_key, iv, ciphertext, tag)


def _check_header(header: Mapping[str, object]) -> None:
    if header.get("alg") != ALG or not isinstance(header.get("enc"), str) or header["enc"] not in CEK_BYTES:
        raise JweRejected(
            "jwe_unsupported_algorithm",
            f"only alg {ALG} with enc {', '.join(CEK_BYTES)} is accepted",
        )
    extra = sorted(set(header) - TOLERATED_MEMBERS)
    if extra:
        raise JweRejected(
            "jwe_unsupported_header", f"protected header members not accepted: {', '.join(extra)[:200]}"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 200:
        raise JweRejected("jwe_malformed", "the JWE protected header has no usable kid")


def decrypt(jwe: Jwe, keys: Mapping[str, rsa.RSAPrivateKey]) -> bytes:
    """Decrypt with the key named by ``kid``; raise :class:`JweRejected` (``unknown_kid``, ``decryption_failed``)."""
    return open_content(jwe, unwrap_key(jwe, keys))


def unwrap_key(jwe: Jwe, keys: Mapping[str, rsa.RSAPrivateKey]) -> bytes:
    """The content-encryption key, by the RSA private-key operation (most of a delivery's CPU)."""
    key = keys.get(jwe.kid)
    if key is None:
        raise JweRejected("unknown_kid", "the JWE is encrypted to a kid this receiver holds no key for")
    try:
        cek = key.decrypt(jwe.encrypted_key, _OAEP)
    except ValueError:
        raise _failed() from None
    if len(cek) != CEK_BYTES[jwe.enc]:
        raise _failed()
    return cek


def open_content(jwe: Jwe, cek: bytes) -> bytes:
    """The plaintext, given the content-encryption key; raise :class:`JweRejected` (``decryption_failed``)."""
    try:
        return AESGCM(cek).decrypt(jwe.iv, jwe.ciphertext + jwe.tag, jwe.protected.encode("ascii"))
    except (InvalidTag, ValueError):
        raise _failed() from None


def _failed() -> JweRejected:
    # One message for every cryptographic failure, so the answer says nothing about which step failed.
    return JweRejected("decryption_failed", "the JWE does not decrypt with the key for its kid")


def warm_up(keys: Mapping[str, rsa.RSAPrivateKey]) -> None:
    """Encrypt and decrypt once with every key, so that forked work horses inherit OpenSSL's per-key state."""
    for kid, key in keys.items():
        decrypt(parse(encrypt(b"{}", key.public_key(), kid)), {kid: key})


def encrypt(plaintext: bytes, public_key: rsa.RSAPublicKey, kid: str, enc: str = "A256GCM") -> bytes:
    """Build a compact JWE exactly as Kayle does (used by ``send-test``, the demo and the tests)."""
    header = json.dumps({"alg": ALG, "enc": enc, "kid": kid}, separators=(",", ":"))
    protected = b64url.encode(header.encode("utf-8"))
    cek = os.urandom(CEK_BYTES[enc])
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    parts = (
        protected,
        b64url.encode(public_key.encrypt(cek, _OAEP)),
        b64url.encode(iv),
        b64url.encode(sealed[:-TAG_BYTES]),
        b64url.encode(sealed[-TAG_BYTES:]),
    )
    return ".".join(parts).encode("ascii")
