"""Text report of a benchmark result document, and its JSON form (NaN written as null)."""

from __future__ import annotations

import math
from typing import Any

from bench.dataplane.analysis import LABELS, PERCENTILES, SETUPS


def _f(v: object, fmt: str = "{:.2f}") -> str:
    if isinstance(v, int | float) and math.isfinite(v):
        return fmt.format(v)
    return "-"


def render(doc: dict[str, Any]) -> str:
    """The human-readable table: latencies, rates, Envoy costs, ratios and targets."""
    meta = doc["meta"]
    m = meta["machine"]
    cfg = meta["config"]
    lines = [
        f"sailmesh data-plane benchmark ({meta['mode']}), {meta['date']}",
        f"machine: {m['nproc']} CPU, {m['cpu_model']}; Envoy {m['envoy']}; load at start {m['loadavg_at_start']}"
        + (f", at end {m['loadavg_at_end']}" if "loadavg_at_end" in m else ""),
        f"fixed rate: {cfg['rate']:g} rps over {cfg['connections']} connections for {cfg['duration_s']:g} s x "
        f"{cfg['rounds']} round(s) with {meta['loadgen']['fixed_rate']}; "
        f"saturation: {cfg['saturation_s']:g} s with {meta['loadgen']['saturation']}",
    ]
    lines += [f"note: {n}" for n in meta["notes"]]
    lines.append("")
    hdr = (f"{'set-up':36} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7}  {'rps':>7} {'sat rps':>8}  "
           f"{'vCPU/1k rps':>11} {'RSS MiB':>8}  (latency in ms; vCPU and RSS: worst Envoy of the set-up)")
    lines.append(hdr)
    for name in SETUPS:
        r = doc["setups"].get(name, {"available": False, "reason": "not run"})
        if not r.get("available"):
            lines.append(f"{LABELS[name]:36} {r.get('reason', 'not available yet')}")
            continue
        fr, side = r["fixed_rate"], r["per_sidecar"]
        lines.append(
            f"{LABELS[name]:36} {_f(fr['p50_ms']):>7} {_f(fr['p90_ms']):>7} {_f(fr['p99_ms']):>7} "
            f"{_f(fr['mean_ms'], '{:.3f}'):>7}  {_f(fr['achieved_rps'], '{:.0f}'):>7} "
            f"{_f(r['saturation']['rps'], '{:.0f}'):>8}  {_f(side['max_vcpu_per_1k_rps'], '{:.3f}'):>11} "
            f"{_f(side['max_peak_rss_mb'], '{:.1f}'):>8}"
        )
        errs = fr["errors"] + r["saturation"]["errors"]
        if errs:
            lines.append(f"{'':36} errors: {fr['errors']} at fixed rate, {r['saturation']['errors']} at saturation")
        if name != "direct":
            lines.append(f"{'':36} transport: {r.get('transport', '')}")
        for env, v in r["envoys"].items():
            lines.append(f"{'':36}   {env}: {_f(v['vcpu'], '{:.3f}')} vCPU = {_f(v['vcpu_per_1k_rps'], '{:.3f}')} "
                         f"per 1k rps, peak RSS {_f(v['peak_rss_mb'], '{:.1f}')} MiB "
                         f"(anonymous {_f(v.get('rss_anon_mb'), '{:.1f}')} MiB)")
        for env, v in r.get("agents", {}).items():
            lines.append(f"{'':36}   {env}: {_f(v['vcpu'], '{:.3f}')} vCPU = {_f(v['vcpu_per_1k_rps'], '{:.3f}')} "
                         f"per 1k rps (counted with its Envoy in the per-sidecar CPU)")
        for n in r.get("notes", []):
            lines.append(f"{'':36} note: {n}")
    rat = doc["ratios"]
    lines += ["", "latency ratios                " + "  ".join(f"{'p' + str(p):>6}" for p in PERCENTILES)]
    for key, vals in rat["latency"].items():
        lines.append(f"  {key:28}" + "  ".join(f"{_f(vals['p' + str(p)]):>6}" for p in PERCENTILES)
                     + ("" if any(v is not None for v in vals.values()) else "   (skipped: set-up not available)"))
    lines.append("added latency vs direct (ms)")
    for key, vals in rat["added_ms"].items():
        lines.append(f"  {key:28}" + "  ".join(f"{_f(vals['p' + str(p)], '{:.3f}'):>6}" for p in PERCENTILES))
    lines.append("added-latency ratios")
    for key, vals in rat["added_ratio"].items():
        lines.append(f"  {key:28}" + "  ".join(f"{_f(vals['p' + str(p)]):>6}" for p in PERCENTILES)
                     + ("" if any(v is not None for v in vals.values()) else "   (skipped: set-up not available)"))
    lines += ["", "targets (Istio's published sidecar figures)"]
    for t in doc["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        lines.append(f"  {LABELS[t['setup']]:36} {t['target']:38} {_f(t['value'], '{:.3f}'):>8} "
                     f"<= {t['limit']:g} {t['unit']:5} {verdict}")
    st = doc["setups"].get("static", {})
    if st.get("available"):
        side = st["per_sidecar"]
        lines.append(f"  reference, (2) static pair, worst Envoy: {_f(side['max_vcpu_per_1k_rps'], '{:.3f}')} vCPU "
                     f"per 1k rps, peak RSS {_f(side['max_peak_rss_mb'], '{:.1f}')} MiB (anonymous "
                     f"{_f(side.get('max_rss_anon_mb'), '{:.1f}')} MiB): peak RSS counts the Envoy binary's "
                     "shared file pages too")
    return "\n".join(lines)
