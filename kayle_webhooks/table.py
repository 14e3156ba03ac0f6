"""Aligned text tables that fit a width, shortening cells with an ellipsis."""

from __future__ import annotations

from collections.abc import Sequence

GAP = "  "
SHORTEST = 16


def render(
    header: list[str],
    rows: list[list[str]],
    width: int | None,
    shrink: Sequence[int] = (),
    keep_end: Sequence[int] = (),
) -> list[str]:
    """The table's lines, at most ``width`` characters each (``None``: as wide as the cells are). Columns are
    narrowed in the order of ``shrink``, each down to :data:`SHORTEST` characters, until the table fits; a
    shortened cell keeps its start, or its end for the columns in ``keep_end`` (dotted names end in what counts)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    if width is not None:
        excess = sum(widths) + len(GAP) * (len(header) - 1) - width
        for column in shrink:
            cut = max(0, min(excess, widths[column] - max(SHORTEST, len(header[column]))))
            widths[column] -= cut
            excess -= cut
    return [
        GAP.join(_cell(text, w, i in keep_end) for i, (text, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [header, *rows]
    ]


def _cell(text: str, width: int, keep_end: bool) -> str:
    if len(text) <= width:
        return text.ljust(width)
    return "…" + text[len(text) - width + 1 :] if keep_end else text[: width - 1] + "…"
