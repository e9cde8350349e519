"""Recorded text as the ``headwater`` command prints it for people (``--json`` prints it
exactly): control characters escaped, so a run name, log line or error message cannot
move the cursor, clear the screen, ring the bell or invent a table row."""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (ESC [ and its one-byte form CSI both start terminal
# commands) and lone surrogates (a terminal's encoder cannot print them).
_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same but newline and tab: text meant to span lines (a log line with its traceback).
_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def shown(text: object, lines: bool = False) -> str:
    """``text`` with control characters as escapes (``\\x1b``, ``\\n``); with ``lines``,
    newlines and tabs are kept. A backslash is left as it is, so a lone surrogate the
    store keeps as ``\\udcff`` is shown as those six characters, as the console shows it."""
    return (_LINES if lines else _ONE_LINE).sub(_escape, str(text))


def quoted(text: object) -> str:
    """``text`` escaped and in quotes, like ``repr`` but without doubling backslashes
    (the store has already escaped what a terminal cannot print)."""
    text = shown(text)
    quote = '"' if "'" in text and '"' not in text else "'"
    return quote + text + quote
