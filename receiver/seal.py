"""The content key sealed for the worker, so that an event costs one RSA operation, not two.

At intake the receiver has the JWE's content-encryption key (CEK) in hand; it stores it beside the JWE,
encrypted (AES-256-GCM) under a key derived with HKDF from the private key of the JWE's ``kid``, and
bound to the event id and the JWE's protected header. Only holders of that private key can open it;
a job without a seal, or with one that does not open, is decrypted with RSA as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from receiver import b64url

VERSION = "v1"
_SALT = b"kayle-webhooks content-key seal"
_NONCE_BYTES = 12


class Sealer:
    """Seals and opens content keys with keys derived from a keyring (derived once per kid)."""

    def __init__(self, keys: Mapping[str, rsa.RSAPrivateKey]) -> None:
        self._ciphers = {kid: AESGCM(_derive(key, kid)) for kid, key in keys.items()}

    def seal(self, cek: bytes, kid: str, event_id: str, protected: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, cek, _bound_to(event_id, protected))
        return f"{VERSION}.{b64url.encode(nonce + sealed)}"

    def open(self, sealed: str, kid: str, event_id: str, protected: str) -> bytes | None:
        """The content key, or ``None`` when the seal is not one this keyring made for this event."""
        cipher = self._ciphers.get(kid)
        version, _, body = sealed.partition(".")
        if cipher is None or version != VERSION:
            return None
        try:
            raw = b64url.decode(body)
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bound_to(event_id, protected))
        except (ValueError, InvalidTag):
            return None


def _derive(key: rsa.RSAPrivateKey, kid: str) -> bytes:
    secret = key.private_numbers().d
    material = secret.to_bytes((secret.bit_length() + 7) // 8, "big")
    return HKDF(hashes.SHA256(), 32, _SALT, f"{VERSION} {kid}".encode()).derive(material)


def _bound_to(event_id: str, protected: str) -> bytes:
    return f"{event_id}.{protected}".encode("ascii", "replace")
