"""``kayle-webhooks keys new|list``: make the RSA keys Kayle encrypts to, and show what is held."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from receiver import keyring
from receiver.settings import ConfigError, Settings, read_settings


def _key_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.dir:
        return Path(args.dir)
    if settings.key_dir is None:
        raise ConfigError("KAYLE_KEY_DIR: not set; set it or pass --dir")
    return settings.key_dir


def registration_body(kid: str, public_key: rsa.RSAPublicKey) -> dict[str, object]:
    """The body of ``POST /v1/webhooks/endpoints/{endpoint_id}/keys``."""
    return {
        "key_id": kid,
        "algorithm": "RSA-OAEP-256",
        "key_type": "RSA",
        "jwk": keyring.public_jwk(public_key, kid),
    }


def new_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    directory = _key_dir(args, settings)
    try:
        path = keyring.write_key(directory, args.kid, args.bits)
    except keyring.KeyFileError as error:
        raise ConfigError(f"KAYLE_KEY_DIR: {error}") from None
    public = keyring.load_private_key(path).public_key()
    body = json.dumps(registration_body(args.kid, public), indent=2)
    endpoint = settings.endpoint_id or "$KAYLE_ENDPOINT_ID"
    url = f"{settings.api_url.rstrip('/').removesuffix('/v1')}/v1/webhooks/endpoints/{endpoint}/keys"
    print(f"wrote {path} ({args.bits}-bit RSA, mode 0600; keep it private and backed up)")
    print(f"public key fingerprint (RFC 7638): {keyring.fingerprint(public)}")
    print("\nregister its public half with Kayle; the body of POST /v1/webhooks/endpoints/{endpoint_id}/keys:")
    print(body)
    print("\nready to run (needs KAYLE_API_KEY with the webhooks:write scope):")
    compact = json.dumps(registration_body(args.kid, public), separators=(",", ":"))
    print(
        f'curl -sS -X POST "{url}" -H "Authorization: Bearer $KAYLE_API_KEY" '
        f"-H 'Content-Type: application/json' --data {shlex.quote(compact)}"
    )
    print("\nKayle makes the new key active at once; keep older keys in the directory while retries may use them.")
    return 0


def list_command(args: argparse.Namespace) -> int:
    settings = read_settings()
    directory = _key_dir(args, settings)
    try:
        ring = keyring.load_keyring(directory)
    except keyring.KeyFileError as error:
        raise ConfigError(f"KAYLE_KEY_DIR: {error}") from None
    print(f"{'kid':<32} {'bits':>5}  fingerprint (RFC 7638 thumbprint of the public key)")
    for info in ring.describe():
        print(f"{info.kid:<32} {info.bits:>5}  {info.fingerprint}")
    return 0
