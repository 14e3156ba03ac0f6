"""The reference pipeline's job: decrypt the queued JWE with ``jwcrypto`` and pass the event to a handler that
does nothing, as a plain RQ worker would (run by ``bench/reference_worker.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jwcrypto import jwe, jwk  # type: ignore[import-untyped]

KEY = jwk.JWK.from_pem(Path(os.environ["REFERENCE_KEY_FILE"]).read_bytes())
# Build (and check) the private key now, in the worker before it forks: jwcrypto builds it at its first use and
# keeps it, and a work horse's copy dies with it, so otherwise every job would pay for it (300 ms at RSA-4096).
KEY.get_op_key("unwrapKey")
ALGORITHMS = ["RSA-OAEP-256", "A128GCM", "A192GCM", "A256GCM"]


def process_event(token: str) -> None:
    decrypted = jwe.JWE(algs=ALGORITHMS)
    decrypted.deserialize(token, key=KEY)
    handle(json.loads(decrypted.payload))


def handle(event: dict[str, Any]) -> None:
    return None
