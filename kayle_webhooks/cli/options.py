"""Options several commands share, declared once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kayle_webhooks.keys import BIT_CHOICES, DEFAULT_BITS

F = TypeVar("F", bound=Callable[..., Any])


def _set_log_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        os.environ["KAYLE_LOG_FORMAT"] = value


log_format = click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    expose_value=False,
    is_eager=True,
    callback=_set_log_format,
    help="Log as JSON lines or human-readable text (overrides KAYLE_LOG_FORMAT).",
)

key_dir = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Key directory (default: KAYLE_KEY_DIR).",
)

bits = click.option(
    "--bits",
    type=click.Choice([str(b) for b in BIT_CHOICES]),
    default=str(DEFAULT_BITS),
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="RSA key size of a new key.",
)


def command(group: click.Group, name: str, **attrs: Any) -> Callable[[F], F]:
    """Declare a subcommand of ``group`` that also takes the shared ``--log-format``."""

    def decorate(func: F) -> F:
        group.command(name, **attrs)(log_format(func))
        return func

    return decorate
