"""Typed rejections of a delivery.

Every step of the request path raises a subclass of :class:`DeliveryRejected`.
Each carries a stable snake_case ``code``, the HTTP status it answers with and a
message written for the sender's operator. Messages name what was wrong, never
the content of the payload, a secret or key material.
"""

from __future__ import annotations

from typing import Literal

#: Every code a rejection carries: with ``accepted`` and ``duplicate``, the only outcome labels of the metrics.
RejectionCode = Literal[
    "payload_too_large",
    "body_timeout",
    "client_gone",
    "signature_missing",
    "signature_malformed",
    "signature_mismatch",
    "timestamp_out_of_tolerance",
    "jwe_malformed",
    "jwe_unsupported_algorithm",
    "jwe_unsupported_header",
    "unknown_kid",
    "decryption_failed",
    "payload_invalid",
    "unavailable",
    "queue_full",
    "not_replicated",
]


class DeliveryRejected(Exception):
    """A delivery that is answered with an error body instead of being accepted."""

    status: int = 400

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BodyRejected(DeliveryRejected):
    """The request body could not be read within the limits (size, time)."""

    def __init__(self, code: RejectionCode, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


class SignatureRejected(DeliveryRejected):
    """``X-Kayle-Signature`` is missing, malformed, stale or does not match."""


class JweRejected(DeliveryRejected):
    """The JWE is malformed, outside the allow-list, for an unknown key, or does not decrypt."""


class PayloadRejected(DeliveryRejected):
    """The decrypted payload is not an event envelope we can route."""

    status = 422


class Unavailable(DeliveryRejected):
    """Redis could not store the event; Kayle must retry."""

    status = 503

    def __init__(self, message: str = "the event store is unavailable; retry later") -> None:
        super().__init__("unavailable", message)


class QueueFull(DeliveryRejected):
    """The queue holds ``KAYLE_MAX_PENDING_EVENTS`` events; Kayle must retry once workers catch up."""

    status = 503

    def __init__(self, limit: int) -> None:
        super().__init__("queue_full", f"{limit} events are waiting for handlers; retry later")


class NotReplicated(Unavailable):
    """Fewer than ``KAYLE_REDIS_MIN_REPLICAS`` replicas confirmed the event in time; Kayle must retry (the retry
    is a duplicate, or accepted again if a failover lost the write)."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        DeliveryRejected.__init__(
            self, "not_replicated", f"the event did not reach {wanted} Redis replica(s) in time; retry later"
        )


def type_name(exc: BaseException) -> str:
    """The exception's type, module-qualified unless built in: what is kept of an exception, never its message."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
