"""Shape guards: read user-written YAML values as lists or mappings without trusting their type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_list(value: Any) -> list[Any]:
    """The value if it is a list, else [] (a malformed field reads as absent)."""
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    """The value if it is a mapping, else {} (a malformed field reads as absent)."""
    return value if isinstance(value, Mapping) else {}


def dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]... or None as soon as a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(k)
    return value
