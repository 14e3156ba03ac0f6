"""Private RSA keys by ``kid``: loading, checking, and their public halves.

``KAYLE_KEY_DIR`` holds one file per key: ``<kid>.pem`` (PKCS#8 or PKCS#1 PEM)
or ``<kid>.json`` (a private JWK). The file stem is the ``kid``. Retired keys
stay in the directory while Kayle may still retry or replay deliveries made
with them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import b64url

MIN_BITS = 2048
KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
KEY_SUFFIXES = (".pem", ".json")


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    bits: int
    fingerprint: str
    path: Path


class Keyring(Mapping[str, rsa.RSAPrivateKey]):
    """An immutable mapping of ``kid`` to private key, with where each came from."""

    def __init__(self, keys: Mapping[str, rsa.RSAPrivateKey], paths: Mapping[str, Path] | None = None) -> None:
        self._keys = dict(keys)
        self._paths = dict(paths or {})

    def __getitem__(self, kid: str) -> rsa.RSAPrivateKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def infos(self) -> list[KeyInfo]:
        return [
            KeyInfo(kid, key.key_size, fingerprint(key.public_key()), self._paths.get(kid, Path(kid)))
            for kid, key in sorted(self._keys.items())
        ]


def load_keyring(directory: Path) -> Keyring:
    """Load every key file in ``directory``; raise :class:`KeyFileError` on the first unusable one."""
    if not directory.is_dir():
        raise KeyFileError(f"{directory} is not a directory")
    keys: dict[str, rsa.RSAPrivateKey] = {}
    paths: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in KEY_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        kid = path.stem
        if kid in keys:
            raise KeyFileError(f"{path.name}: kid {kid!r} is defined by two files")
        keys[kid] = load_private_key(path)
        paths[kid] = path
    if not keys:
        raise KeyFileError(f"{directory} holds no <kid>.pem or <kid>.json private key")
    return Keyring(keys, paths)


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path.name}: cannot be read ({exc.strerror})") from None
    key = _from_jwk(path, data) if path.suffix == ".json" else _from_pem(path, data)
    if key.key_size < MIN_BITS:
        raise KeyFileError(f"{path.name}: RSA key of {key.key_size} bits; at least {MIN_BITS} are required")
    return key


def _from_pem(path: Path, data: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path.name}: the key is encrypted; store it without a passphrase") from None
    except (ValueError, Exception):
        raise KeyFileError(f"{path.name}: not a PEM private key (PKCS#8 or PKCS#1)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path.name}: not an RSA private key")
    return key


def _b64int(value: Any, path: Path, name: str) -> int:
    if not isinstance(value, str) or not value:
        raise KeyFileError(f"{path.name}: private JWK has no {name!r} member")
    try:
        return b64url.decode_int(value)
    except ValueError:
        raise KeyFileError(f"{path.name}: private JWK member {name!r} is not base64url") from None


def _from_jwk(path: Path, data: bytes) -> rsa.RSAPrivateKey:
    try:
        jwk = json.loads(data)
    except ValueError:
        raise KeyFileError(f"{path.name}: not valid JSON") from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        raise KeyFileError(f"{path.name}: not an RSA JWK (kty must be RSA)")
    if "d" not in jwk:
        raise KeyFileError(f"{path.name}: a public JWK; the private key (with 'd') is needed")
    n, e, d = (_b64int(jwk.get(m), path, m) for m in ("n", "e", "d"))
    try:
        if all(m in jwk for m in ("p", "q", "dp", "dq", "qi")):
            p, q, dp, dq, qi = (_b64int(jwk[m], path, m) for m in ("p", "q", "dp", "dq", "qi"))
        else:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
            dp, dq, qi = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q)
        numbers = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except ValueError:
        raise KeyFileError(f"{path.name}: the JWK members do not form a consistent RSA key") from None


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key."""
    numbers = key.public_numbers()
    canonical = json.dumps(
        {"e": b64url.encode_int(numbers.e), "kty": "RSA", "n": b64url.encode_int(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url.encode(hashlib.sha256(canonical.encode("ascii")).digest())
