"""Plain-text rendering for a terminal: aligned tables and field lists.

Values are shown as the API gives them (prices and amounts are its decimal
strings, never re-parsed into floats); only times, which the API gives as
epoch milliseconds, are shown as UTC clock times, and owners' keys shortened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
KEY_CHARS = 12  # how much of a 64-hex key a table shows


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[_text(c) for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        bool(cells) and all(NUMBER.match(row[i]) or row[i] == "" for row in cells)
        for i in range(len(header))
    ]

    def line(row: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line([h.upper() for h in header]), *(line(r) for r in cells)])


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name: value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {_text(v)}".rstrip() for k, v in pairs)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A JSON object as dotted ``(key, value)`` pairs; lists of objects are left as they are."""
    if not isinstance(data, Mapping):
        return [(prefix or "value", data)]
    pairs: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten(value, name))
        else:
            pairs.append((name, value))
    return pairs


def clock(ms: Any) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SSZ``; anything else as it is."""
    if isinstance(ms, bool) or not isinstance(ms, int):
        return _text(ms)
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def short(key: Any, me: str | None = None) -> str:
    """A public key cut to ``KEY_CHARS`` (``me`` if it is this node's)."""
    if not isinstance(key, str):
        return _text(key)
    if me is not None and key == me:
        return "me"
    return key[:KEY_CHARS] + ("…" if len(key) > KEY_CHARS else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) if value else "-"
    return str(value)
