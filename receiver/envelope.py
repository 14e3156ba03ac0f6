"""Read the routing fields of a decrypted payload, and nothing else.

The receiver needs the event ``type`` and ``metadata.event_id``; every other
field is passed on untouched (inside the JWE) to the workers. Unknown types and
fields are accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from receiver.errors import PayloadRejected

# Event ids become Redis keys and RQ job ids: RQ allows [A-Za-z0-9_-].
EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


@dataclass(frozen=True)
class Envelope:
    type: str
    event_id: str


def read_envelope(plaintext: bytes) -> Envelope:
    """Return the routing fields or raise :class:`PayloadRejected` (never quoting the payload)."""
    return envelope_of(load_payload(plaintext))


def load_payload(plaintext: bytes) -> dict[str, Any]:
    """The decrypted payload as a JSON object, or :class:`PayloadRejected`."""
    try:
        payload = json.loads(plaintext)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise PayloadRejected("payload_invalid", "the decrypted payload is not UTF-8 JSON") from None
    if not isinstance(payload, dict):
        raise PayloadRejected("payload_invalid", "the decrypted payload is not a JSON object")
    return payload


def envelope_of(payload: dict[str, Any]) -> Envelope:
    """The routing fields of a payload (the same rules at the door and in the worker)."""
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise PayloadRejected("payload_invalid", "the payload has no usable string 'type'")
    metadata = payload.get("metadata")
    event_id = metadata.get("event_id") if isinstance(metadata, dict) else None
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise PayloadRejected(
            "payload_invalid", "the payload has no usable 'metadata.event_id' (1-200 of A-Z a-z 0-9 _ -)"
        )
    return Envelope(event_type, event_id)
