"""Errors a command reports as one line (``kayle-webhooks: ...``) and exit status 1.

Configuration errors are :class:`receiver.settings.ConfigError` (exit status 2)."""

from __future__ import annotations


class CommandError(Exception):
    """The command could not do what was asked; the message says why and what to do instead."""


class KayleApiError(CommandError):
    """An answer from Kayle that is not a success, or no usable answer at all (``status`` None)."""

    def __init__(self, status: int | None, code: str, message: str, hint: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status is not None else ""
        text = f"Kayle API error ({where}{self.code}): {self.message}"
        return f"{text} Hint: {self.hint}" if self.hint else text
