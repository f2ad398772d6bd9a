"""envoyproxy/ratelimit's configuration (domain, nested descriptors, rate_limit unit and requests_per_unit) and
its fixed-window counting: which limit a request descriptor hits, and whether it is over."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class ConfigError(ValueError):
    """The rate-limit configuration is not envoyproxy/ratelimit's format."""


@dataclass(frozen=True)
class Limit:
    requests_per_unit: int
    unit: str  # second, minute, hour, day

    @property
    def seconds(self) -> int:
        return UNIT_SECONDS[self.unit]


@dataclass
class Node:
    """One descriptor config: its key, its value ("" matches any value), its limit, the nested descriptors."""

    key: str
    value: str = ""
    limit: Limit | None = None
    unlimited: bool = False
    children: list[Node] = field(default_factory=list)


def _nodes(raw: Any, where: str) -> list[Node]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: descriptors must be a list")
    out = []
    for i, d in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(d, Mapping) or not isinstance(d.get("key"), str) or not d["key"]:
            raise ConfigError(f"{path}: a descriptor needs a key")
        limit = None
        rl = d.get("rate_limit")
        if rl is not None:
            if not isinstance(rl, Mapping) or str(rl.get("unit", "")).lower() not in UNIT_SECONDS:
                raise ConfigError(f"{path}.rate_limit: unit must be one of {', '.join(UNIT_SECONDS)}")
            n = rl.get("requests_per_unit")
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"{path}.rate_limit.requests_per_unit: must be a non-negative integer")
            limit = Limit(n, str(rl["unit"]).lower())
        out.append(Node(d["key"], str(d.get("value", "")), limit, bool(d.get("unlimited", False)),
                        _nodes(d.get("descriptors"), f"{path}.descriptors")))
    return out


def parse(doc: Any) -> tuple[str, list[Node]]:
    """(domain, descriptors) from a parsed config document."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("domain"), str) or not doc["domain"]:
        raise ConfigError("the configuration needs a domain")
    return doc["domain"], _nodes(doc.get("descriptors"), "descriptors")


def find(nodes: Sequence[Node], entries: Sequence[tuple[str, str]]) -> Node | None:
    """The descriptor config a request descriptor reaches: at each level the entry's key with its value, else the
    key without a value; the last node reached must carry a limit (or be unlimited)."""
    level, hit = nodes, None
    for key, value in entries:
        exact = next((n for n in level if n.key == key and n.value == value), None)
        node = exact or next((n for n in level if n.key == key and not n.value), None)
        if node is None:
            return None
        hit, level = node, node.children
    return hit if hit is not None and (hit.limit is not None or hit.unlimited) else None


class Counter:
    """Fixed windows per (domain, descriptor entries, unit), as envoyproxy/ratelimit counts in Redis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...], str, int], int] = {}

    def hit(self, domain: str, entries: Sequence[tuple[str, str]], limit: Limit, hits: int = 1) -> tuple[bool, int]:
        """Count `hits`; (over the limit, requests remaining in this window)."""
        window = int(self.clock()) // limit.seconds
        key = (domain, tuple(entries), limit.unit, window)
        if len(self._counts) > 100_000:  # old windows go; the current ones are at most this many
            self._counts = {k: v for k, v in self._counts.items() if k[-1] >= window - 1}
        count = self._counts.get(key, 0) + hits
        self._counts[key] = count
        return count > limit.requests_per_unit, max(0, limit.requests_per_unit - count)
