"""Text that comes from a model file is data: made safe to print or show, and parsed defensively.

Names, docstrings and metadata reach a terminal (``info``, ``repr``) and HTML (the notebook card,
``view --html``). ``shown`` escapes every control or invisible formatting character (ESC, BEL,
CR, newline, DEL, the C1 range, bidirectional overrides, line separators) the way ``repr`` does,
so a value can neither move the cursor nor forge a line, and cuts long values. ``own_json``
parses onnxbridge's own metadata keys with a size and nesting cap, never raising.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_SHOWN", "own_json", "shown"]

MAX_SHOWN = 300  # characters of one value shown in info / repr / HTML
MAX_JSON_BYTES = 1 << 20  # onnxbridge's own JSON metadata (a parity report is a few KiB)
MAX_JSON_DEPTH = 32


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    return not ch.isprintable() and ch != " "


def shown(value: Any, limit: int | None = MAX_SHOWN) -> str:
    """``value`` as one line of plain text: control characters escaped, cut to ``limit``.

    >>> shown("ok\\x1b[2J\\nforged: yes")
    'ok\\\\x1b[2J\\\\nforged: yes'
    """
    text = value if isinstance(value, str) else str(value)
    total = len(text)
    if limit is not None and total > limit:
        text = text[:limit]
    if not text.isprintable():
        text = "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)
    if limit is not None and total > limit:
        text += f"... ({total:,} characters in all)"
    return text


def is_clean(value: str) -> bool:
    """True when ``value`` has no character ``shown`` would escape."""
    return value.isprintable()


def _too_deep(text: str, limit: int) -> bool:
    """Nesting of JSON brackets beyond ``limit`` (strings skipped), without recursion."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def own_json(text: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
             ) -> dict[str, Any] | None:
    """An onnxbridge metadata value parsed as a JSON object, or None if it is not one
    (too long, too deeply nested, not JSON, not an object). Never raises."""
    if not isinstance(text, str) or len(text) > max_bytes or _too_deep(text, max_depth):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None

