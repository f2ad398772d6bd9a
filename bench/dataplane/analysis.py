"""Pure maths of the benchmark: percentiles, per-set-up summaries, ratios and Istio's targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 90, 99)

# Istio's published sidecar figures (istio.io, "Performance and Scalability"), the targets here.
TARGET_ADDED_LATENCY_VS_STATIC = 1.1   # added latency of the sidecar pair <= 1.1x the static pair's
TARGET_VCPU_PER_1K_RPS = 0.20          # per sidecar
TARGET_RSS_MB = 60.0                   # per sidecar

SETUPS = ("direct", "static", "static_mtls", "mesh", "mesh_demo", "mesh_nometrics", "mesh_notelemetry")
# the sailmesh pairs (a failure there is reported, not fatal)
MESH_SETUPS = ("mesh", "mesh_demo", "mesh_nometrics", "mesh_notelemetry")
LABELS = {
    "direct": "(1) direct",
    "static": "(2) static Envoy pair",
    "static_mtls": "(2m) static Envoy mTLS pair",
    "mesh": "(3) sailmesh pair",
    "mesh_demo": "(4) sailmesh pair + demo features",
    "mesh_nometrics": "(3n) sailmesh pair, metrics off",
    "mesh_notelemetry": "(3t) sailmesh pair, telemetry off",
}


@dataclass
class ProcSample:
    """CPU seconds used by one process over `wall_s` seconds of load; its peak RSS and anonymous RSS after."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    rss_anon_mb: float = math.nan


def process_summary(samples: list[ProcSample], achieved_rps: float) -> dict[str, float]:
    """vCPU over the fixed-rate phases, scaled to 1,000 rps, and the peak RSS."""
    cpu = sum(s.cpu_s for s in samples)
    wall = sum(s.wall_s for s in samples)
    vcpu = cpu / wall if wall > 0 else math.nan
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "vcpu": vcpu,
        "vcpu_per_1k_rps": vcpu / (achieved_rps / 1000.0) if achieved_rps > 0 else math.nan,
        "peak_rss_mb": max((s.peak_rss_mb for s in samples), default=math.nan),
        "rss_anon_mb": max((s.rss_anon_mb for s in samples), default=math.nan),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return None
    return a / b


def _lat(results: dict[str, Any], name: str, p: int) -> float | None:
    r = results.get(name)
    if not r or not r.get("available"):
        return None
    v = r["fixed_rate"][f"p{p}_ms"]
    return float(v) if v is not None and math.isfinite(v) else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """(3)/(1), (3)/(2), (3)/(2m), (4)/(2), (3n)/(2m), (3t)/(2m) per percentile; added latency vs direct and its
    ratios; None = not measurable."""
    out: dict[str, Any] = {"latency": {}, "added_ms": {}, "added_ratio": {}}
    for num, den in (("mesh", "direct"), ("mesh", "static"), ("mesh", "static_mtls"), ("mesh_demo", "static"),
                     ("mesh_nometrics", "static_mtls"), ("mesh_notelemetry", "static_mtls")):
        out["latency"][f"{num}/{den}"] = {f"p{p}": _ratio(_lat(results, num, p), _lat(results, den, p))
                                          for p in PERCENTILES}
    for name in ("static", "static_mtls", *MESH_SETUPS):
        added: dict[str, float | None] = {}
        for p in PERCENTILES:
            s, d = _lat(results, name, p), _lat(results, "direct", p)
            added[f"p{p}"] = s - d if s is not None and d is not None else None
        out["added_ms"][name] = added
    for num, den in (("mesh", "static"), ("mesh_demo", "static"), ("mesh", "static_mtls"),
                     ("mesh_nometrics", "static_mtls"), ("mesh_notelemetry", "static_mtls")):
        out["added_ratio"][f"{num}/{den}"] = {
            f"p{p}": _ratio(out["added_ms"][num][f"p{p}"], out["added_ms"][den][f"p{p}"]) for p in PERCENTILES
        }
    return out


def targets(results: dict[str, Any], rat: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target for set-ups (3), (4), (3n) and (3t): value, limit and pass (None = not measurable yet)."""
    rows: list[dict[str, Any]] = []
    for name in MESH_SETUPS:
        r = results.get(name) or {}
        avail = bool(r.get("available"))
        # the mesh pair against the plaintext static pair (issue 10's metrics target) and, being mTLS itself,
        # against the static mTLS pair (issue 9's target); (3n) and (3t), without Istio's metrics (and exchange),
        # against the latter only
        for den, what in (("static", "static pair"), ("static_mtls", "static mTLS pair")):
            if f"{name}/{den}" not in rat["added_ratio"]:
                continue
            for p in PERCENTILES:
                v = rat["added_ratio"][f"{name}/{den}"][f"p{p}"]
                rows.append({"setup": name, "target": f"added latency p{p} vs {what}", "value": v,
                             "limit": TARGET_ADDED_LATENCY_VS_STATIC, "unit": "x",
                             "pass": None if v is None else v <= TARGET_ADDED_LATENCY_VS_STATIC})
        side = r.get("per_sidecar", {}) if avail else {}
        for key, limit, unit, label in (("max_vcpu_per_1k_rps", TARGET_VCPU_PER_1K_RPS, "vCPU", "CPU per 1,000 rps"),
                                        ("max_peak_rss_mb", TARGET_RSS_MB, "MiB", "peak RSS")):
            v = side.get(key)
            ok = v is not None and math.isfinite(v)
            rows.append({"setup": name, "target": f"{label} per sidecar", "value": v if ok else None,
                         "limit": limit, "unit": unit, "pass": (v <= limit) if ok else None})
    return rows
