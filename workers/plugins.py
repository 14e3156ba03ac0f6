"""Finding handler plugins: the entry-point group ``kayle_webhooks.handlers`` and ``KAYLE_HANDLERS``.

``KAYLE_LOAD_ENTRY_POINTS=false`` leaves the entry-point group out: only ``KAYLE_HANDLERS`` is loaded.

Importing a plugin module runs its ``@on``/``@on_any`` decorators, which fill
:data:`workers.registry.REGISTRY`. A plugin that fails to import stops the
worker: a worker never runs with a handler missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from receiver.settings import ConfigError, Settings
from workers.registry import EVERY_EVENT, REGISTRY, Registry

ENTRY_POINT_GROUP = "kayle_webhooks.handlers"
_MAX_REASON = 300


class PluginError(ConfigError):
    """A handler plugin could not be imported; ``str(error)`` is one line naming it."""


@dataclass(frozen=True)
class Plugin:
    name: str
    target: str
    source: str  # "entry point" or "KAYLE_HANDLERS"


def discover(settings: Settings) -> list[Plugin]:
    """Every plugin a worker would load: entry points first (unless ``KAYLE_LOAD_ENTRY_POINTS`` is false),
    then ``KAYLE_HANDLERS``."""
    found: list[Plugin] = []
    if settings.load_entry_points:
        found = [
            Plugin(ep.name, ep.value, "entry point")
            for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        ]
    return found + [Plugin(module, module, "KAYLE_HANDLERS") for module in settings.handler_modules()]


def load_handlers(settings: Settings) -> Registry:
    """Import every plugin; raise :class:`PluginError` naming the first one that fails to import."""
    for plugin in discover(settings):
        _import(plugin)
    return REGISTRY


def _import(plugin: Plugin) -> None:
    module_name, _, attribute = plugin.target.partition(":")
    try:
        module = importlib.import_module(module_name.strip())
        if attribute:
            getattr(module, attribute.strip())
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:_MAX_REASON] if str(exc) else type(exc).__name__
        if plugin.source == "KAYLE_HANDLERS":
            where = f"KAYLE_HANDLERS: handler module {plugin.target!r}"
        else:
            where = f"handler plugin {plugin.name!r} (entry point {ENTRY_POINT_GROUP}: {plugin.target})"
        raise PluginError(f"{where} failed to import ({reason}); the worker does not run without it") from None


def describe_handlers(registry: Registry) -> list[str]:
    """One line per event type naming its handlers, for start-up logs and ``kayle-webhooks check``."""
    lines = []
    for event_type, names in registry.describe().items():
        label = "every event (on_any)" if event_type == EVERY_EVENT else event_type
        lines.append(f"{label}: {', '.join(names)}")
    return lines
