"""Log lines: a value from a request cannot forge a field or a line, in text or JSON."""

from __future__ import annotations

import json
import logging

import pytest

from receiver.logs import FIELDS, JsonFormatter, TextFormatter

FORGED = {
    "delivery_id": "whd_x outcome=accepted status=200",
    "kid": 'k1\n12:00:00 ERROR   kayle.receiver: forged line kid="x"',
    "type": "a\\b\r\u2028c",
}


def record(message: str = "delivery", **fields: object) -> logging.LogRecord:
    entry = logging.LogRecord("kayle.receiver", logging.INFO, __file__, 1, message, None, None)
    setattr(entry, FIELDS, fields)
    return entry


def test_text_lines_quote_values_so_that_none_adds_a_field_or_a_line() -> None:
    line = TextFormatter().format(record(outcome="signature_missing", status=400, **FORGED))
    assert line.isprintable()  # one line: no CR, LF or other separator left raw
    assert ' outcome=signature_missing status=400 delivery_id="whd_x outcome=accepted status=200" ' in line
    _, _, fields = line.partition("delivery ")
    parsed = dict(_pairs(fields))
    assert parsed == {"outcome": "signature_missing", "status": "400", **FORGED}


def test_text_lines_keep_plain_values_bare_and_escape_a_message_with_a_newline() -> None:
    line = TextFormatter().format(record("two\nlines", event_id="evt_1", kid="kayle-2026-01", duration_ms=1.5))
    assert line.endswith(' "two\\nlines" event_id=evt_1 kid=kayle-2026-01 duration_ms=1.5')


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_forged_value_stays_one_line_in_either_format(formatter: logging.Formatter) -> None:
    line = formatter.format(record(**FORGED))
    assert "\n" not in line and "\r" not in line
    if isinstance(formatter, JsonFormatter):
        assert {k: json.loads(line)[k] for k in FORGED} == FORGED


def _pairs(text: str) -> list[tuple[str, str]]:
    """Read ``key=value`` fields back, a quoted value as the JSON string it is."""
    decoder = json.JSONDecoder()
    pairs = []
    rest = text.strip()
    while rest:
        key, _, rest = rest.partition("=")
        if rest.startswith('"'):
            value, end = decoder.raw_decode(rest)
            rest = rest[end:].lstrip()
        else:
            value, _, rest = rest.partition(" ")
        pairs.append((key, value))
    return pairs
