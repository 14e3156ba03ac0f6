"""Key tooling: make the RSA keys Kayle encrypts to, the body that registers them, and which key is newest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import b64url, jwe
from receiver.keyring import KEY_SUFFIXES, KID_PATTERN, KeyFileError, Keyring, load_keyring

DEFAULT_BITS = 4096
BIT_CHOICES = (2048, 3072, 4096)


def generate(bits: int = DEFAULT_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_key(directory: Path, kid: str, bits: int = DEFAULT_BITS) -> Path:
    """Generate a key and store it as ``<kid>.pem`` (mode 0600) in ``directory``; never overwrite one."""
    if not KID_PATTERN.fullmatch(kid):
        raise KeyFileError(f"{kid[:40]!r}: a kid is 1-128 letters, digits, '-' or '_' (it becomes the file name)")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise KeyFileError(f"{directory}: exists and is not a directory") from None
    except OSError as exc:
        raise KeyFileError(f"{directory}: cannot be created ({exc.strerror})") from None
    for suffix in KEY_SUFFIXES:
        if os.path.lexists(directory / f"{kid}{suffix}"):  # a dangling symlink too: never write through one
            raise KeyFileError(f"{kid}{suffix}: already exists in {directory}; choose another --kid")
    path = directory / f"{kid}.pem"
    data = pem(generate(bits))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{kid}.pem: already exists in {directory}; choose another --kid") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be written ({exc.strerror})") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return path


def public_jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "n": b64url.encode_int(numbers.n),
        "e": b64url.encode_int(numbers.e),
        "alg": jwe.ALG,
        "use": "enc",
        "kid": kid,
    }


def registration_body(kid: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The body of Kayle's ``POST /v1/webhooks/endpoints/{endpoint_id}/keys``."""
    return {"key_id": kid, "algorithm": jwe.ALG, "key_type": "RSA", "jwk": public_jwk(public_key, kid)}


def newest(keys: Keyring) -> str:
    """The kid of the most recently created key file: the one Kayle is most likely to use."""
    infos = keys.infos()
    return max(infos, key=lambda info: (info.path.stat().st_mtime if info.path.exists() else 0, info.kid)).kid


def held(directory: Path) -> Keyring:
    """The keys in ``directory``; empty when it does not exist or holds no key file yet."""
    if not directory.is_dir() or not any(p.suffix in KEY_SUFFIXES for p in directory.iterdir()):
        return Keyring({})
    return load_keyring(directory)
