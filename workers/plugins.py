"""Finding handler plugins: the entry-point group ``kayle_webhooks.handlers`` and ``KAYLE_HANDLERS``.

Importing a plugin module runs its ``@on``/``@on_any`` decorators, which fill
:data:`workers.registry.REGISTRY`. A plugin that fails to import stops the
worker: a worker never runs with a handler missing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points

from receiver.settings import ConfigError, Settings
from workers.models import KNOWN_EVENT_TYPES, unknown_type_hint
from workers.registry import EVERY_EVENT, REGISTRY, Registry

ENTRY_POINT_GROUP = "kayle_webhooks.handlers"
_MAX_REASON = 300


class PluginError(ConfigError):
    """A handler plugin could not be imported; ``str(error)`` is one line naming it, where and what to do."""


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
    return found + [Plugin(module, module, "KAYLE_HANDLERS") for module in settings.handlers]


def load_handlers(settings: Settings) -> Registry:
    """Import every plugin; raise :class:`PluginError` naming the first one that fails to import.

    Modules are also found in the current directory, as ``python -m`` finds them."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
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
        raise PluginError(_import_failure(plugin, module_name.strip(), exc)) from None


def _import_failure(plugin: Plugin, module_name: str, exc: Exception) -> str:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:_MAX_REASON] if str(exc) else type(exc).__name__
    if plugin.source == "KAYLE_HANDLERS":
        where = f"KAYLE_HANDLERS: handler module {plugin.target!r}"
    else:
        where = f"handler plugin {plugin.name!r} (entry point {ENTRY_POINT_GROUP}: {plugin.target})"
    missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None and module_name.startswith(exc.name)
    if missing:
        fix = (
            f"searched the current directory ({os.getcwd()}) and the installed packages; install the plugin "
            "(pip install ...) or add its folder to PYTHONPATH"
        )
    else:
        fix = f"fix the error at {_location(exc, module_name)}, or remove the plugin"
    return f"{where} failed to import ({reason}); the worker does not run without it; fix: {fix}"


def _location(exc: Exception, module_name: str) -> str:
    """``file:line`` where the import failed: the syntax error's, or the plugin module's deepest frame."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        origin = importlib.util.find_spec(module_name).origin  # type: ignore[union-attr]
        frames = [f for f in frames if f.filename == origin] or frames
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "its import"


def handler_lines(registry: Registry) -> list[str]:
    """One line per event type naming its handlers, for start-up logs and ``kayle-webhooks check``."""
    lines = []
    for event_type, names in registry.names_by_type().items():
        label = "every event (on_any)" if event_type == EVERY_EVENT else event_type
        lines.append(f"{label}: {', '.join(names)}")
    return lines


def unknown_type_warnings(registry: Registry) -> list[tuple[str, str]]:
    """``(warning, fix)`` for each registered type Kayle does not document: most often a typo."""
    warnings = []
    for event_type, names in registry.names_by_type().items():
        if event_type == EVERY_EVENT or event_type in KNOWN_EVENT_TYPES:
            continue
        warnings.append(
            (
                f"{', '.join(names)} registered for {event_type!r}, which is not a known Kayle event type",
                f"{unknown_type_hint(event_type)} (keep it if you meant a type Kayle added after this version)",
            )
        )
    return warnings
