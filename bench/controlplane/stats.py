"""Percentiles, Istio's convergence buckets, and the Prometheus text the control plane exposes."""

from __future__ import annotations

import math
import re

# Istio's pilot_proxy_convergence_time buckets (seconds)
BUCKETS = (0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)

TARGET_CONVERGENCE_P99_S = 0.100  # at 1,000 services / 500 proxies
TARGET_MB_PER_PROXY = 0.5  # Istio ~1.3 MB, Kuma ~1 MB
TARGET_CSR_PER_S_PER_CORE = 1000


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def bucketed(values: list[float], buckets: tuple[float, ...] = BUCKETS) -> dict[str, int]:
    """Cumulative counts per upper bound, as a Prometheus histogram (`le`), plus +Inf."""
    out = {f"{b:g}": sum(1 for v in values if v <= b) for b in buckets}
    out["+Inf"] = len(values)
    return out


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            continue
    return out


def counters_by_type(text: str, name: str) -> dict[str, float]:
    """A counter's value per `type` label (pilot_xds_pushes -> {"cds": 12, ...})."""
    out: dict[str, float] = {}
    for n, labels, v in parse_prometheus(text):
        if n in (name, name + "_total"):
            out[labels.get("type", "")] = out.get(labels.get("type", ""), 0.0) + v
    return out


def histogram_by_type(text: str, name: str) -> dict[str, dict[str, float]]:
    """Cumulative bucket counts per `type` label, plus "count" and "sum"."""
    out: dict[str, dict[str, float]] = {}
    for n, labels, v in parse_prometheus(text):
        t = labels.get("type", "")
        if n == name + "_bucket":
            out.setdefault(t, {})[labels.get("le", "")] = v
        elif n == name + "_count":
            out.setdefault(t, {})["count"] = v
        elif n == name + "_sum":
            out.setdefault(t, {})["sum"] = v
    return out
