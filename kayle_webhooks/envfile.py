"""Writing settings the service reads back: ``./.env`` and the signing-secrets file.

Both hold secrets, so both are written through a temporary file created exclusively in the same
directory (mode 0600) and renamed into place; neither is ever written through a symlink.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from dotenv import dotenv_values

from receiver.settings import ConfigError

DOTENV = Path(".env")


def dotenv_value(name: str, path: Path = DOTENV) -> str | None:
    if not path.exists():
        return None
    return dotenv_values(path).get(name)


def set_dotenv(name: str, value: str, path: Path = DOTENV) -> None:
    """Set ``name=value`` in ``path``, keeping every other line; the caller has checked ``value``."""
    lines = _read_lines(path)
    kept = [line for line in lines if not _assigns(line, name)]
    _replace(path, [*kept, f"{name}={value}"])


def append_line(path: Path, line: str) -> None:
    """Add ``line`` to ``path`` unless it is there already."""
    lines = _read_lines(path)
    if line not in (item.strip() for item in lines):
        _replace(path, [*lines, line])


def _assigns(line: str, name: str) -> bool:
    stripped = line.strip().removeprefix("export ").lstrip()
    return stripped.split("=", 1)[0].strip() == name if "=" in stripped else False


def _read_lines(path: Path) -> list[str]:
    _refuse_symlink(path)
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


def _refuse_symlink(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a regular file (a symlink?); refusing to write a secret through it")


def _replace(path: Path, lines: list[str]) -> None:
    directory = path.resolve().parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)  # 0600, O_EXCL
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
            file.flush()
            os.fsync(file.fileno())
        _refuse_symlink(path)
        os.replace(temporary, directory / path.name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
