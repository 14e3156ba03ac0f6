"""Logging: one record per fact, JSON lines by default, ``key=value`` text on request.

Callers pass ids, codes and figures as ``fields``; nothing here ever sees a
payload, a claim, a secret or a signature.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

FIELDS = "kayle_fields"
_PLAIN = re.compile(r'[!#-<>-\[\]-~]+')  # printable ASCII but space, '"', '=' and backslash


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, {}))
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages can carry payload data.
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``key=value`` fields; a value that is not a plain token is quoted and escaped, so that no value
    (an unsigned header, a kid) can add a field or a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={_token(v)}" for k, v in getattr(record, FIELDS, {}).items() if v is not None)
        message = record.getMessage()
        if not message.isprintable():
            message = json.dumps(message)
        text = f"{stamp} {record.levelname:<7} {record.name}: {message}"
        if record.exc_info and record.exc_info[0] is not None:
            fields += f" exception={record.exc_info[0].__name__}"
        return f"{text} {fields}".rstrip()


def _token(value: object) -> str:
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def configure(log_format: str = "json", level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, RQ's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "rq.worker", "rq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The receiver logs each delivery itself, with ids and outcome; uvicorn's access lines would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={FIELDS: fields})
