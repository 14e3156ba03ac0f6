"""What a handler receives: typed event models and the delivery :class:`Context`.

The four event types Kayle documents get a typed model each; any other type
(a newer one, or an older API generation) arrives as :class:`GenericEvent`.
Every model keeps fields it does not declare (``extra="allow"``), so nothing
Kayle adds is ever dropped: read them with ``model_extra`` or ``model_dump()``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from workers import effects

#: A claim value: a string, a boolean (``age_over_N``), or ``None`` (declined). Treat values as opaque.
ClaimValue = str | bool | None

#: Failure codes Kayle documents today; ``SessionFailed.data.failure_code`` stays a plain ``str``
#: because Kayle may add codes without notice.
FailureCode = Literal[
    "document_authenticity_failed",
    "document_active_authentication_failed",
    "document_chip_authentication_failed",
    "document_anti_cloning_attestation_failed",
    "document_data_invalid",
    "liveness_failed",
    "selfie_face_mismatch",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Metadata(_Open):
    """``metadata``: the event id always; the session id for every current event type."""

    event_id: str
    contract_version: int | None = None
    verification_session_id: str | None = None


class BaseEvent(_Open):
    """Fields every event has. ``session_id`` is ``metadata.verification_session_id``."""

    type: str
    metadata: Metadata

    @property
    def event_id(self) -> str:
        return self.metadata.event_id

    @property
    def session_id(self) -> str | None:
        return self.metadata.verification_session_id


class SucceededData(_Open):
    """``claims``: claim key to value. A declined optional claim may be absent or ``None``:
    use ``claims.get(key)`` and treat both the same."""

    claims: dict[str, ClaimValue] = Field(default_factory=dict)
    selected_field_keys: list[str] = Field(default_factory=list)


class FailedData(_Open):
    failure_code: str
    nfc_tries_used: int
    liveness_tries_used: int


class ExpiredData(_Open):
    pass


class CancelledData(_Open):
    outcome: str
    reason: str
    nfc_tries_used: int
    liveness_tries_used: int


class SessionSucceeded(BaseEvent):
    type: Literal["verification.session.succeeded"]
    data: SucceededData


class SessionFailed(BaseEvent):
    type: Literal["verification.session.failed"]
    data: FailedData


class SessionExpired(BaseEvent):
    type: Literal["verification.session.expired"]
    data: ExpiredData = Field(default_factory=ExpiredData)


class SessionCancelled(BaseEvent):
    type: Literal["verification.session.cancelled"]
    data: CancelledData


class GenericEvent(BaseEvent):
    """An event type this version does not know: every field is kept as received."""

    data: dict[str, Any] = Field(default_factory=dict)


#: What an ``on_any`` handler may receive.
Event = SessionSucceeded | SessionFailed | SessionExpired | SessionCancelled | GenericEvent

#: The typed model of each documented event type, keyed by its ``type`` literal.
MODELS: dict[str, type[BaseEvent]] = {
    get_args(model.model_fields["type"].annotation)[0]: model
    for model in (SessionSucceeded, SessionFailed, SessionExpired, SessionCancelled)
}


#: The event types Kayle documents today (others arrive as :class:`GenericEvent`).
KNOWN_EVENT_TYPES: tuple[str, ...] = tuple(MODELS)


def unknown_type_hint(event_type: str) -> str:
    """What to say of a type Kayle does not document: the closest known type, or the known ones."""
    close = difflib.get_close_matches(event_type, KNOWN_EVENT_TYPES, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known types: {', '.join(KNOWN_EVENT_TYPES)}"


def model_for(event_type: str) -> type[BaseEvent]:
    """The model an event of ``event_type`` is validated into."""
    return MODELS.get(event_type, GenericEvent)


@dataclass(frozen=True)
class Context:
    """Facts about the delivery, for logs and idempotence. ``attempt`` is 1 on the first run; ``handler`` is the
    name of the handler it was given to."""

    event_id: str
    event_type: str
    delivery_id: str | None
    kid: str
    received_at: datetime
    attempt: int
    handler: str = ""

    def first_time(self, connection: effects.DatabaseConnection) -> bool:
        """Mark this event as applied by this handler, in ``connection``'s current transaction: ``True`` the first
        time (do the write, in the same transaction), ``False`` once a run that did it has committed (skip it).
        See :func:`workers.effects.first_time`."""
        if not self.handler:
            raise RuntimeError("ctx.first_time() is for handlers: this Context was not given to a handler")
        return effects.first_time(connection, self.event_id, self.handler)
