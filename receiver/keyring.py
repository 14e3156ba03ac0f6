"""Private RSA keys by ``kid``: loading, checking, and their public halves.

``KAYLE_KEY_DIR`` holds one file per key: ``<kid>.pem`` (PKCS#8 or PKCS#1 PEM)
or ``<kid>.json`` (a private JWK). The file stem is the ``kid``. Retired keys
stay in the directory while Kayle may still retry or replay deliveries made
with them. A key others can read, or linked from outside the directory, loads
with a warning (:attr:`Keyring.warnings`); docs/design.md says why not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import b64url

MIN_BITS = 2048
MAX_BITS = 8192  # checking a 16384-bit key alone takes most of a minute, in every process
MIN_EXPONENT = 65537
MAX_FILE_BYTES = 64 * 1024  # an 8192-bit private JWK is about 8 KiB
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
    """An immutable mapping of ``kid`` to private key, with where each came from and ``(warning, fix)`` pairs."""

    def __init__(
        self,
        keys: Mapping[str, rsa.RSAPrivateKey],
        paths: Mapping[str, Path] | None = None,
        warnings: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._keys = dict(keys)
        self._paths = dict(paths or {})
        self.warnings = warnings

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
    warnings: list[tuple[str, str]] = []
    for path in sorted(directory.iterdir()):
        # Directories, FIFOs, devices and dangling links are no keys (and reading some would never end).
        if path.suffix not in KEY_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        kid = _kid(path)
        if kid in keys:
            raise KeyFileError(f"{path.name}: kid {kid!r} is defined by two files")
        keys[kid] = load_private_key(path)
        paths[kid] = path
        warnings += _exposure(path, directory)
    if not keys:
        raise KeyFileError(f"{directory} holds no <kid>.pem or <kid>.json private key")
    return Keyring(keys, paths, tuple(warnings))


def _kid(path: Path) -> str:
    if not KID_PATTERN.fullmatch(path.stem):
        raise KeyFileError(
            f"{path.name[:60]!r}: not a kid, and a key file is named <kid>.pem or <kid>.json (a kid is 1-128 "
            "letters, digits, '-' or '_', as Kayle sends it); rename the file or move it out of the directory"
        )
    return path.stem


def _exposure(path: Path, directory: Path) -> list[tuple[str, str]]:
    """``(warning, fix)`` when users other than the service's can read or change the key in ``path``."""
    found = []
    if path.is_symlink() and not path.resolve().is_relative_to(directory.resolve()):
        found.append((
            f"{path} is a symlink to {path.resolve()}, outside the key directory: whoever can change that "
            "file or its directory can change the key this service decrypts with",
            f"copy the key into {directory} (mode 600) instead of linking it",
        ))
    status = path.stat()
    granted = stat.S_IMODE(status.st_mode) & 0o066
    if status.st_gid == os.getegid() and status.st_uid != os.geteuid():
        granted &= ~0o040  # read through the service's own group: how Kubernetes mounts a Secret (fsGroup)
    if granted:
        who = " and ".join(name for bits, name in ((0o060, "its group"), (0o006, "every user")) if granted & bits)
        can = " and ".join(verb for bits, verb in ((0o044, "read"), (0o022, "change")) if granted & bits)
        found.append((
            f"{path}: private key file with mode {stat.S_IMODE(status.st_mode):04o}: {who} can {can} it",
            f"chmod 600 {path} (and chown it to the user the service runs as)",
        ))
    return found


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{path.name}: larger than {MAX_FILE_BYTES // 1024} KiB, so not a private key")
    return _from_jwk(path, data) if path.suffix == ".json" else _from_pem(path, data)


def _check_size(path: Path, bits: int, exponent: int) -> None:
    """Refuse a key before the costly consistency check: it grows with the cube of the size."""
    if bits < MIN_BITS:
        raise KeyFileError(f"{path.name}: RSA key of {bits} bits; at least {MIN_BITS} are required")
    if bits > MAX_BITS:
        raise KeyFileError(
            f"{path.name}: RSA key of {bits} bits; at most {MAX_BITS} are accepted (checking a larger one costs "
            "up to a minute of start-up in every process, and it slows every delivery): make a 4096-bit key with "
            "`kayle-webhooks keys new`"
        )
    if exponent < MIN_EXPONENT:
        raise KeyFileError(
            f"{path.name}: RSA public exponent {exponent}; at least {MIN_EXPONENT} is required: "
            "make a new key with `kayle-webhooks keys new`"
        )


def _from_pem(path: Path, data: bytes) -> rsa.RSAPrivateKey:
    key = _parse_pem(path, data, validate=False)
    _check_size(path, key.key_size, key.public_key().public_numbers().e)
    return _parse_pem(path, data, validate=True)


def _parse_pem(path: Path, data: bytes, *, validate: bool) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=not validate)
    except TypeError:
        raise KeyFileError(f"{path.name}: the key is encrypted; store it without a passphrase") from None
    except Exception:
        raise KeyFileError(f"{path.name}: not a PEM private key (PKCS#8 or PKCS#1), or an inconsistent one") from None
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
    _check_size(path, n.bit_length(), e)
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
