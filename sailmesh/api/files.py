"""Finding and reading config files, without parsing them: what a command needs to send files elsewhere.

`sailmesh analyze -f` reads the files here and sends their text to the control plane, which parses and analyzes
them; this module imports no YAML parser, so such a command starts as fast as Python does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from sailmesh.errors import ParseError

YAML_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 32 * 1024 * 1024  # a config file larger than this is refused, not parsed


def iter_files(path: str) -> Iterable[str]:
    """The YAML/JSON files under path (or path itself), in a stable order."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.endswith(YAML_SUFFIXES):
                    yield os.path.join(root, f)
    else:
        yield path


def read_text(path: str, max_bytes: int = MAX_FILE_BYTES) -> str | ParseError:
    """One file's text, or the error saying why it is not a config file (too large, binary, not UTF-8)."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            return ParseError(f"file too large ({size} bytes; the limit is {max_bytes} bytes)", file=path)
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        return ParseError(f"cannot read: {e.strerror or e}", file=path)
    if len(data) > max_bytes:
        return ParseError(f"file too large (over {max_bytes} bytes)", file=path)
    if b"\x00" in data:
        return ParseError("not a text file (contains NUL bytes)", file=path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return ParseError("not a text file (invalid UTF-8)", file=path, line=line)


def read_paths(paths: Iterable[str]) -> tuple[list[tuple[str, str]], list[ParseError]]:
    """Every file named or found under the given paths as (name, text), and the errors of those unreadable."""
    texts: list[tuple[str, str]] = []
    errors: list[ParseError] = []
    for p in paths:
        if not os.path.exists(p):
            errors.append(ParseError("no such file or directory", file=p))
            continue
        for f in iter_files(p):
            text = read_text(f)
            if isinstance(text, ParseError):
                errors.append(text)
            else:
                texts.append((f, text))
    return texts, errors
