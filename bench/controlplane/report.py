"""Text report of the control-plane benchmark, with the targets beside the results."""

from __future__ import annotations

import math
from typing import Any

from bench.controlplane import stats, trace


def _ms(v: object) -> str:
    return f"{v * 1000:.1f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def targets(case: dict[str, Any]) -> list[str]:
    """Target lines for one case (the convergence target applies at 1,000 services / 500 proxies)."""
    out = []
    p99 = case.get("vs_change", {}).get("p99_s", math.nan)
    at = "" if (case["services"], case["proxies"]) == (1000, 500) else " (target is set at 1,000 services/500 proxies)"
    ok = "met" if p99 < stats.TARGET_CONVERGENCE_P99_S else "NOT met"
    out.append(f"convergence p99 {_ms(p99)} ms vs target < {stats.TARGET_CONVERGENCE_P99_S * 1000:.0f} ms: {ok}{at}")
    mb = case.get("mb_per_proxy", math.nan)
    ok = "met" if mb < stats.TARGET_MB_PER_PROXY else "NOT met"
    out.append(f"memory {mb:.3f} MB/proxy vs target < {stats.TARGET_MB_PER_PROXY} MB (Istio ~1.3, Kuma ~1): {ok}")
    return out


def render_case(c: dict[str, Any]) -> list[str]:
    if "error" in c:
        return [f"== {c['services']} services, {c['proxies']} proxies, Sidecar scoping "
                f"{'on' if c['sidecar_scoping'] else 'off'}: FAILED: {c['error']}"]
    lines = [f"== {c['services']} services, {c['proxies']} proxies, Sidecar scoping "
             f"{'on' if c['sidecar_scoping'] else 'off'}"]
    rp = c["resources_per_proxy"]
    sizes = [f"{t} {v['min']}" + (f"-{v['max']}" if v["max"] != v["min"] else "") for t, v in rp.items()]
    lines.append("resources per proxy: " + ", ".join(sizes))
    fp = c["first_push"]
    lines.append(f"control plane start-up {c['startup_s']:.2f} s; first full push to all proxies "
                 f"{fp['all_synced_s']:.2f} s (p50 {fp['p50_s']:.2f} s), {fp['cpu_s']:.1f} CPU s")
    if "clients_cpu_s" in fp:
        lines.append(f"  the simulated proxies: {fp['clients_cpu_s']:.1f} CPU s during the first push, "
                     f"{c.get('clients_rss_mb', math.nan):.0f} MiB RSS once synced (the harness, not the control "
                     "plane)")
    if fp.get("clients_that_reconnected"):
        lines.append(f"  {fp['clients_that_reconnected']} clients had their stream fail and reconnected, e.g. "
                     f"{fp['reconnect_example']}")
    for key, label in (("vs_change", "VirtualService change (RDS)"), ("endpoint_change", "endpoint change (EDS)")):
        ch = c[key]
        b = ch["buckets"]
        lines.append(f"{label}: n={ch['n']} p50 {_ms(ch['p50_s'])} ms, p90 {_ms(ch['p90_s'])} ms, "
                     f"p99 {_ms(ch['p99_s'])} ms, max {_ms(ch['max_s'])} ms; CPU {ch['cpu_per_push_s'] * 1000:.0f} ms "
                     f"per push ({ch['cpu_per_push_s'] * 1000 / max(1, c['proxies']):.2f} ms per proxy)")
        if "clients_cpu_per_push_s" in ch:
            lines.append(f"  the simulated proxies' CPU on the same cores: "
                         f"{ch['clients_cpu_per_push_s'] * 1000:.0f} ms per push (all client worker processes)")
        lines.append("  buckets (le s: count) " + " ".join(f"{k}:{v}" for k, v in b.items()))
        lines.append(f"  responses sent by type {ch['responses_sent_by_type']}; other types received by clients "
                     f"{ch['other_types_received'] or 'none'}")
        if "envoy" in ch:
            lines.append(f"  real Envoys applied it: p50 {_ms(ch['envoy']['p50_s'])} ms, "
                         f"max {_ms(ch['envoy']['max_s'])} ms (Envoy's update_time, read after the clients)")
    if "push_stages" in c:
        lines += trace.render(c["push_stages"])
    lines.append(f"memory: RSS {c['rss_0_proxies_mb']:.1f} MiB with 0 proxies, {c['rss_mb']:.1f} MiB with "
                 f"{c['proxies']}: {c['mb_per_proxy']:.3f} MB per proxy"
                 + (f"; {c['rss_end_mb']:.1f} MiB after the changes: {c['mb_per_proxy_end']:.3f} MB per proxy"
                    if "mb_per_proxy_end" in c else ""))
    if "envoys" in c:
        e = c["envoys"]
        lines.append(f"real Envoys: {e['count']} ready in {e['ready_s']:.2f} s, same resources as their lean twins: "
                     f"{all(x['same_as_twin'] is not False for x in e['checks'])}, in sync at the end: "
                     f"{e.get('synced_at_end', False)}")
    lines += [f"target: {t}" for t in targets(c)]
    lines += [f"note: {n}" for n in c.get("notes", [])]
    return lines


def render(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = [f"sailmesh control-plane benchmark ({meta['mode']}), {meta['date']}",
             f"machine: {meta['machine']['nproc']} CPU, {meta['machine']['cpu_model']}; load at start "
             f"{meta['machine']['loadavg_at_start']}, at end {meta['machine'].get('loadavg_at_end')}",
             f"command: {meta['command']}"]
    lines += [f"note: {n}" for n in meta["notes"]]
    for c in doc["cases"]:
        lines.append("")
        lines += render_case(c)
    lines.append("")
    if "csr" in doc:
        from bench.controlplane.csr import render as render_csr

        lines.append(render_csr(doc["csr"]))
    else:
        lines.append(f"CSRs signed per second: not measured (--no-csr; target {stats.TARGET_CSR_PER_S_PER_CORE}/core)")
    return "\n".join(lines)
