"""JSON for benchmark results: standard JSON, with NaN and infinities written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def to_json(doc: dict[str, Any]) -> str:
    """Standard JSON (no NaN) of a result document."""
    return json.dumps(_clean(doc), indent=2)
