"""Telemetry API metric overrides as the agent applies them: disable a standard metric, remove a label, or add /
replace one with the value of a CEL expression over request attributes (`request.host`, `request.headers['x']`).

Istio's rules matched (Telemetry `metrics[].overrides`, pilot/pkg/model/telemetry.go): the overrides of one side
(CLIENT: outbound and gateway listeners, the `source` reporter; SERVER: inbound, the `destination` reporter) are
merged per metric by resolve.resolve_metrics; `disabled` drops the metric; `tagOverrides` REMOVE drops the label,
UPSERT (the default) sets it to the expression's value. An expression Envoy cannot evaluate (an absent header)
gives `unknown`, as Istio's stats filter does.

How it travels (no extra channel): Envoy evaluates each distinct expression per request as a custom tag of the
access-log entry (`%CEL(expr)%`, key `istio.tag.<n>`); the override itself rides in the log name, which Envoy sends
once per stream. Kept free of protobuf imports: the agent loads it at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from sailmesh.telemetry.peer import UNKNOWN

if TYPE_CHECKING:  # resolve loads the API models: not at the agent's start-up
    from sailmesh.telemetry.resolve import MetricOverride

# Istio's MetricSelector.IstioMetric -> the Prometheus name sailmesh exports (GRPC_* messages are not counted).
METRIC_NAMES: dict[str, str] = {
    "REQUEST_COUNT": "istio_requests_total",
    "REQUEST_DURATION": "istio_request_duration_milliseconds",
    "REQUEST_SIZE": "istio_request_bytes",
    "RESPONSE_SIZE": "istio_response_bytes",
    "TCP_OPENED_CONNECTIONS": "istio_tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "istio_tcp_connections_closed_total",
    "TCP_SENT_BYTES": "istio_tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "istio_tcp_received_bytes_total",
    "GRPC_REQUEST_MESSAGES": "istio_request_messages_total",
    "GRPC_RESPONSE_MESSAGES": "istio_response_messages_total",
}
TAG_PREFIX = "istio.tag."  # custom tag keys of the expressions: istio.tag.0, istio.tag.1, ...


def tag_key(i: int) -> str:
    return f"{TAG_PREFIX}{i}"


@dataclass(frozen=True)
class Policy:
    """One side's overrides. `tags`: metric -> ((label, expression index, or -1 to remove), ...) in label order;
    `expressions`: the CEL expressions (built), or just their custom-tag keys (decoded by the agent, which only
    reads their values)."""

    disabled: frozenset[str] = frozenset()
    tags: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    expressions: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.disabled or self.tags)

    def encode(self) -> str:
        """Compact JSON for the log name ("" when there is nothing to override)."""
        if not self:
            return ""
        return json.dumps({"d": sorted(self.disabled), "t": {m: [list(t) for t in ts] for m, ts in
                                                             sorted(self.tags.items())}},
                          separators=(",", ":"), sort_keys=True)


NO_POLICY = Policy()


def build(overrides: Iterable[MetricOverride]) -> Policy:
    """The Policy of one side from resolve.resolve_metrics' overrides."""
    disabled: set[str] = set()
    tags: dict[str, list[tuple[str, int]]] = {}
    expressions: list[str] = []
    for o in overrides:
        name = o.name
        if name not in METRIC_NAMES:
            continue  # custom metrics: not defined in sailmesh (reported by resolve.unenforced)
        if o.disabled:
            disabled.add(name)
        for t in o.tags:
            if t.remove:
                tags.setdefault(name, []).append((t.name, -1))
                continue
            expr = t.value
            if expr not in expressions:
                expressions.append(expr)
            tags.setdefault(name, []).append((t.name, expressions.index(expr)))
    return Policy(frozenset(disabled), {m: tuple(ts) for m, ts in tags.items()}, tuple(expressions))


@lru_cache(maxsize=256)
def decode(text: str) -> Policy:
    """The Policy of a log name's last field; NO_POLICY for "" or anything unreadable (the standard labels)."""
    if not text:
        return NO_POLICY
    try:
        raw = json.loads(text)
        tags = {str(m): tuple((str(n), int(i)) for n, i in ts) for m, ts in dict(raw.get("t", {})).items()}
        n = max((i for ts in tags.values() for _, i in ts), default=-1) + 1
        return Policy(frozenset(str(d) for d in raw.get("d", ())), tags, tuple(tag_key(i) for i in range(n)))
    except (ValueError, TypeError, AttributeError):
        return NO_POLICY


def extras(policy: Policy, custom_tags: Mapping[str, str]) -> tuple[str, ...]:
    """The expression values of one entry, in expression order (`unknown` when Envoy had no value)."""
    n = len(policy.expressions)
    return tuple(custom_tags.get(tag_key(i)) or UNKNOWN for i in range(n))


def labels_for(policy: Policy, metric: str, names: Sequence[str], values: Sequence[str],
               extra: Sequence[str]) -> tuple[tuple[str, str], ...] | None:
    """The label pairs of one series of `metric` after the overrides; None when the metric is disabled."""
    if metric in policy.disabled:
        return None
    ops = policy.tags.get(metric)
    if not ops:
        return tuple(zip(names, values, strict=True))
    out = dict(zip(names, values, strict=True))
    for label, i in ops:
        if i < 0:
            out.pop(label, None)
        else:
            out[label] = extra[i] if i < len(extra) else UNKNOWN
    return tuple(out.items())


__all__ = ["METRIC_NAMES", "NO_POLICY", "Policy", "build", "decode", "extras", "labels_for", "tag_key"]
