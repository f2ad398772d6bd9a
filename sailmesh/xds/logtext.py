"""Client-supplied text made safe for a log line: no newline or control character can forge another line."""

from __future__ import annotations

MAX_LOGGED = 256


def printable(text: object, limit: int = MAX_LOGGED) -> str:
    """`text` with every non-printable character (and the backslash) escaped, cut to `limit` characters."""
    s = text if isinstance(text, str) else str(text)
    cut = len(s) > limit
    if cut:
        s = s[:limit]
    if not s.isprintable() or "\\" in s:
        s = "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in s)
    return f"{s}...({len(text) if isinstance(text, str) else '?'} chars)" if cut else s
