"""The working half of kayle-webhooks: handler plugins, dispatch, retries and failed events.

The partner's API::

    from workers import on, on_any, Context, SessionSucceeded

    @on("verification.session.succeeded")
    def provision(event: SessionSucceeded, ctx: Context) -> None: ...

    @on_any
    def audit(event: Event, ctx: Context) -> None: ...
"""

from workers.models import (
    BaseEvent,
    CancelledData,
    ClaimValue,
    Context,
    Event,
    ExpiredData,
    FailedData,
    FailureCode,
    GenericEvent,
    Metadata,
    SessionCancelled,
    SessionExpired,
    SessionFailed,
    SessionSucceeded,
    SucceededData,
)
from workers.registry import on, on_any

__all__ = [
    "BaseEvent",
    "CancelledData",
    "ClaimValue",
    "Context",
    "Event",
    "ExpiredData",
    "FailedData",
    "FailureCode",
    "GenericEvent",
    "Metadata",
    "SessionCancelled",
    "SessionExpired",
    "SessionFailed",
    "SessionSucceeded",
    "SucceededData",
    "on",
    "on_any",
]
