"""Handler registration: ``@on(*types)`` and ``@on_any`` fill one process-wide :class:`Registry`.

A handler's name is ``<module>.<qualified function name>``: it is what logs,
metrics, failure records and the per-event progress refer to, so renaming
a handler makes a retry run it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

HandlerFunc = Callable[[Any, Any], object]
F = TypeVar("F", bound=HandlerFunc)

#: The key :meth:`Registry.names_by_type` uses for ``on_any`` handlers.
EVERY_EVENT = "*"


@dataclass(frozen=True)
class Handler:
    name: str
    func: HandlerFunc


def handler_name(func: HandlerFunc) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"


class Registry:
    """Handlers by event type, plus the ones for every event, in registration order."""

    def __init__(self) -> None:
        self._by_type: dict[str, list[Handler]] = {}
        self._every: list[Handler] = []

    def add(self, func: HandlerFunc, event_types: tuple[str, ...] | None) -> None:
        """Register ``func`` for ``event_types`` (``None``: every event). Registering a name again replaces it."""
        handler = Handler(handler_name(func), func)
        for bucket in [self._every] if event_types is None else [self._by_type.setdefault(t, []) for t in event_types]:
            _put(bucket, handler)

    def for_type(self, event_type: str) -> list[Handler]:
        """The handlers an event of ``event_type`` runs: its own first, then the ``on_any`` ones, each once."""
        chosen: dict[str, Handler] = {}
        for handler in [*self._by_type.get(event_type, []), *self._every]:
            chosen.setdefault(handler.name, handler)
        return list(chosen.values())

    def names_by_type(self) -> dict[str, list[str]]:
        """Handler names per event type; ``"*"`` lists the ``on_any`` handlers."""
        found = {event_type: [h.name for h in handlers] for event_type, handlers in sorted(self._by_type.items())}
        if self._every:
            found[EVERY_EVENT] = [h.name for h in self._every]
        return found

    def __len__(self) -> int:
        return len({h.name for handlers in [*self._by_type.values(), self._every] for h in handlers})


def _put(bucket: list[Handler], handler: Handler) -> None:
    for position, existing in enumerate(bucket):
        if existing.name == handler.name:
            bucket[position] = handler
            return
    bucket.append(handler)


#: The registry the decorators fill when plugin modules are imported.
REGISTRY = Registry()


def on(*event_types: str) -> Callable[[F], F]:
    """Register the decorated function for one or more event types: ``@on("verification.session.succeeded")``."""
    if not event_types or not all(isinstance(t, str) and t for t in event_types):
        raise TypeError(
            "on() takes one or more event type strings, e.g. @on('verification.session.succeeded'); "
            "use @on_any for every event"
        )

    def decorate(func: F) -> F:
        REGISTRY.add(func, event_types)
        return func

    return decorate


def on_any(func: F) -> F:
    """Register the decorated function for every event, known types or not (after the type's own handlers)."""
    if not callable(func):
        raise TypeError("on_any is used bare: @on_any, without parentheses")
    REGISTRY.add(func, None)
    return func
