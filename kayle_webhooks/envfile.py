"""Writing settings the service reads back: ``./.env`` and the signing-secrets file.

Both hold secrets. Each is read without following a link and rewritten whole through a temporary
file created exclusively (mode 0600) in the same directory, then renamed over it: a planted name
cannot redirect the write, and a link at the path is refused, never written through. The write
functions return the file's previous mode (None for a new file): the file is 0600 afterwards.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import tempfile
from pathlib import Path

from dotenv import dotenv_values

from receiver.settings import ConfigError

DOTENV = Path(".env")
PRIVATE = 0o600
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/@+=-]*")  # a value that needs no quoting in a .env line


def check_writable(path: Path, setting: str = "") -> None:
    """Refuse now what a write would refuse later (a link, not a regular file), before anything else is done."""
    _read(path, setting)


def dotenv_value(name: str, path: Path = DOTENV) -> str | None:
    text, _ = _read(path)
    return dotenv_values(stream=io.StringIO(text)).get(name)


def set_dotenv(name: str, value: str, path: Path = DOTENV) -> int | None:
    """Set ``name=value`` in ``path``, keeping every other line; ``value`` must need no quoting."""
    if not _PLAIN.fullmatch(value):
        raise ConfigError(f"{path.absolute()}: refusing to write {name}: its value would need quoting in a .env file")
    text, previous = _read(path)
    kept = [line for line in text.splitlines() if not _assigns(line, name)]
    _replace(path, [*kept, f"{name}={value}"], "", previous)
    return previous


def append_line(path: Path, line: str, setting: str) -> int | None:
    """Add ``line`` to ``path`` (named by the variable ``setting``) unless it is there already."""
    if "\n" in line or "\r" in line:
        raise ValueError("one line only")
    text, previous = _read(path, setting)
    lines = text.splitlines()
    present = line in (item.strip() for item in lines)
    if not present or previous != PRIVATE:
        _replace(path, lines if present else [*lines, line], setting, previous)
    return previous


def _assigns(line: str, name: str) -> bool:
    stripped = line.strip().removeprefix("export ").lstrip()
    return stripped.split("=", 1)[0].strip() == name if "=" in stripped else False


def _where(path: Path, setting: str) -> str:
    return f"{setting}: {path.absolute()}" if setting else str(path.absolute())


def _read(path: Path, setting: str = "") -> tuple[str, int | None]:
    """The text and mode of ``path`` ("" and None when it does not exist), opened without following a link."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # no wait on a FIFO either
    except FileNotFoundError:
        return "", None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{_where(path, setting)} is a symlink; refusing to write a secret through it "
                "(replace the link with the file itself)"
            ) from None
        raise ConfigError(f"{_where(path, setting)}: cannot be read ({exc.strerror})") from None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(f"{_where(path, setting)} is not a regular file; refusing to write a secret to it")
        return file.read().decode("utf-8"), stat.S_IMODE(status.st_mode)


def _replace(path: Path, lines: list[str], setting: str, previous: int | None) -> None:
    directory = path.absolute().parent
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)  # 0600
    except OSError as exc:
        raise ConfigError(f"{_where(path, setting)}: cannot write in {directory} ({exc.strerror})") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if previous is not None:
                _keep_owner(file.fileno(), path)
            file.write("\n".join(lines) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # a link planted since it was read is replaced, not followed
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"{_where(path, setting)}: cannot be written ({exc.strerror})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _keep_owner(descriptor: int, path: Path) -> None:
    """Run as root over the service's file, the new file stays the service's (else it could not read it)."""
    try:
        owner = os.lstat(path)
        if (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(descriptor, owner.st_uid, owner.st_gid)
    except (FileNotFoundError, PermissionError):
        pass
