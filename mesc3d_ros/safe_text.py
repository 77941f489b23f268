"""
Message-derived text made safe to log: bounded length, printable characters only.

Anything a publisher controls (an encoding, a class id, a frame id) can be a megabyte of control characters; written
into a log line or a /diagnostics value as it is, one message would cost megabytes of log and could forge lines on a
terminal. Every such string passes through :func:`printable` before it is logged or reported.
"""

from __future__ import annotations

FIELD_CHARS = 64
"""Longest message-derived field in a log line: enough for any real encoding, class id or frame id."""
LINE_CHARS = 2000
"""Longest log line the node writes (a traceback of a real bug fits; a one-line cause uses far less)."""


def printable(text: object, limit: int = FIELD_CHARS, keep_newlines: bool = False) -> str:
    r"""
    ``text`` as a string of at most ``limit`` printable characters (+ a note of how much was cut).

    Non-printable characters become their ``repr`` escapes (``\x00``, ``\u202e``); with ``keep_newlines`` line
    breaks stay (tracebacks). Escaping happens before cutting, so the result is bounded by ``limit`` plus the note.
    """
    text = str(text)
    cut = len(text) > limit
    head = text[:limit]  # cut first: never escape a megabyte only to throw it away
    escaped = ''.join(c if c.isprintable() or (keep_newlines and c == '\n') else repr(c)[1:-1] for c in head)
    escaped = escaped[:limit]
    return f'{escaped}…[{len(text) - limit} more chars]' if cut else escaped
