"""Value types shared by the API: Go-style durations and percentages (selectors: sailmesh.api.hosts)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sailmesh.errors import SailmeshError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadValue(SailmeshError):
    """A scalar value (duration, percentage, ...) is malformed; the message says why."""


def parse_duration(text: Any) -> float:
    """Seconds in a Go/Kubernetes duration string such as `10s`, `1.5s`, `500ms`, `1h30m`."""
    if not isinstance(text, str) or not text:
        raise BadValue(f"invalid duration {text!r}: expected a string such as '10s' or '500ms'")
    pos, total = 0, 0.0
    s = text[1:] if text[0] in "+" else text
    if s == "0":
        return 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise BadValue(f"invalid duration {text!r}: expected a string such as '10s' or '500ms'")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def percent(value: Any) -> float:
    """A percentage 0..100 from an Istio Percent ({value: 12.5}) or a plain number."""
    if isinstance(value, Mapping):
        value = value.get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"invalid percentage {value!r}")
    return float(value)
