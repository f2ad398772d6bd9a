"""`python -m bench.dataplane.tls_compare`: the TLS the mesh pair's hop negotiates next to the static mTLS pair's.

Starts the static mTLS pair (set-up (2m)) and the sailmesh pair (set-up (3)) in front of one backend, sends the
same paced load through each, then reads from all four Envoys what TLS did on the hop between the two proxies:
the configured contexts (the client's UpstreamTlsContext and the server's DownstreamTlsContext, flattened field by
field; the mesh's SDS references shown as where its secrets come from) and Envoy's own `ssl.*` statistics (TLS
version, cipher, curve and signature algorithm negotiated, handshakes, resumed sessions, connections) against the
requests sent. A difference that costs per request shows here as handshakes or bytes per request; one that does
not (a setting never exercised) shows as a config difference only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench.dataplane import loadgen, mesh_config
from bench.dataplane.mesh import mesh_pair_factory
from bench.dataplane.setups import SetupContext, start_backend, static_mtls_sides
from bench.static_envoy import start_static_pair

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TLS_CONTEXTS = ("UpstreamTlsContext", "DownstreamTlsContext")
# What Envoy counts per TLS context: handshakes, resumptions, errors and the negotiated parameters.
STAT = re.compile(r"^(cluster|listener)\.(.+?)\.(ssl\..+|upstream_cx_total|downstream_cx_total|upstream_rq_total"
                  r"|downstream_rq_total|upstream_cx_tx_bytes_total|upstream_cx_rx_bytes_total)$")


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted paths to leaves (lists by index), the secrets' inline PEM shortened to what kind of value it is."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from flatten(value[k], f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, json.dumps(value)


def _get(admin: str, path: str) -> str:
    body: bytes = _NO_PROXY.open(f"http://{admin}{path}", timeout=10).read()
    return body.decode()


def tls_contexts(admin: str) -> dict[str, Any]:
    """The TLS contexts in an Envoy's config that name a peer: clusters' (and their tlsMode matches') upstream
    contexts and listeners' downstream contexts, by where they are."""
    dump = json.loads(_get(admin, "/config_dump"))
    out: dict[str, Any] = {}

    def visit(where: str, node: Any) -> None:
        if isinstance(node, dict):
            typ = str(node.get("@type", "")).rsplit(".", 1)[-1]
            if typ in TLS_CONTEXTS:
                out[where] = node
                return
            for k, v in node.items():
                visit(f"{where}/{node.get('name', '')}" if k in ("cluster", "listener") else where, v)
        elif isinstance(node, list):
            for v in node:
                visit(where, v)

    for cfg in dump.get("configs", []):
        for key in ("static_clusters", "dynamic_active_clusters", "static_listeners", "dynamic_listeners"):
            for entry in cfg.get(key, []):
                item = entry.get("cluster") or entry.get("listener") or entry.get("active_state", {}).get("listener")
                if item:
                    visit(item.get("name", ""), item)
    return out


def ssl_stats(admin: str) -> dict[str, int]:
    """Envoy's counters of every TLS context and the connections and requests beside them (non-zero only)."""
    out = {}
    for line in _get(admin, "/stats").splitlines():
        name, _, value = line.partition(": ")
        if STAT.match(name) and value.strip().isdigit() and int(value) > 0:
            out[name] = int(value)
    return out


def pick(contexts: dict[str, Any], side: str, needle: str) -> tuple[str, dict[str, Any]]:
    """The client's context towards the server (side "client") or the server's inbound one; `needle` picks among
    several (the mesh's outbound cluster of the benchmark service, its inbound listener)."""
    want = "UpstreamTlsContext" if side == "client" else "DownstreamTlsContext"
    found = [(w, c) for w, c in contexts.items() if str(c.get("@type", "")).endswith(want) and needle in w]
    if not found:
        raise SystemExit(f"no {want} matching {needle!r} in {sorted(contexts)}")
    return found[0]


def run(rate: float, conns: int, duration: float, concurrency: int) -> dict[str, Any]:
    """Both pairs under the same load; their hop's TLS config and statistics."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sailmesh-tls-compare-"))
    backend_proc, backend = start_backend()
    result: dict[str, Any] = {}
    try:
        pair = start_static_pair(backend.port, workdir / "static-mtls", concurrency, backend.host,
                                 static_mtls_sides())
        try:
            run_ = loadgen.run_wrk_paced(f"http://{backend.host}:{pair.a.listen_port}/", rate, conns, duration)
            admins = {"client": f"127.0.0.1:{pair.a.admin_port}", "server": f"127.0.0.1:{pair.b.admin_port}"}
            result["static_mtls"] = _collect(admins, run_, ("upstream", "in"))
        finally:
            pair.stop()
        handle = mesh_pair_factory("default")(backend, SetupContext(workdir, concurrency))  # type: ignore[misc]
        try:
            state = json.loads((workdir / "mesh-default" / "state" / "mesh.json").read_text())
            ips = {p["name"]: p["address"] for p in state["processes"]}
            admins = {"client": f"{ips[f'{mesh_config.CLIENT}-0.default.sidecar']}:15000",
                      "server": f"{ips[f'{mesh_config.SERVER}-0.default.sidecar']}:15000"}
            run_ = loadgen.run_wrk_paced(handle.url, rate, conns, duration, handle.host_header)
            result["mesh"] = _collect(admins, run_, (f"|{mesh_config.SERVICE}", f"_{mesh_config.SERVICE_PORT}"))
        finally:
            handle.cleanup()
    finally:
        backend_proc.terminate()
        backend_proc.wait(5)
    result["loadavg"] = os.getloadavg()
    return result


def _collect(admins: dict[str, str], run_: loadgen.FixedRateResult, needles: tuple[str, str]) -> dict[str, Any]:
    ctx = {side: pick(tls_contexts(admins[side]), side, needle) for side, needle in zip(admins, needles, strict=True)}
    return {"requests": run_.requests, "errors": run_.errors, "percentiles_ms": run_.percentiles_ms,
            "contexts": {side: {"where": w, "config": c} for side, (w, c) in ctx.items()},
            "stats": {side: ssl_stats(admins[side]) for side in admins}}


def _stat_rows(stats: dict[str, int], requests: int) -> dict[str, str]:
    """Per TLS context: the negotiated parameters and handshakes per 1,000 requests, keyed without the context's
    name (which differs between the pairs)."""
    out: dict[str, str] = {}
    for name, value in stats.items():
        m = STAT.match(name)
        assert m is not None
        kind, where, what = m.groups()
        if kind == "listener" and not where.replace("_", ".").replace(".", "").isdigit() and "." not in where:
            continue  # admin / named listeners without TLS
        key = f"{kind}.{what}"
        per_k = f" ({value / requests * 1000:.2f} per 1k requests)" if requests and what in (
            "ssl.handshake", "upstream_cx_total", "downstream_cx_total", "ssl.session_reused") else ""
        out[key] = out.get(key, "") + (" + " if key in out else "") + f"{value}{per_k}"
    return out


def render(doc: dict[str, Any]) -> str:
    s, m = doc["static_mtls"], doc["mesh"]
    lines = [f"requests: static mTLS {s['requests']} ({s['errors']} errors), mesh {m['requests']} ({m['errors']} "
             f"errors); p50/p90/p99 ms static {s['percentiles_ms']}, mesh {m['percentiles_ms']}; "
             f"load average at the end {doc['loadavg'][0]:.1f}"]
    for side in ("client", "server"):
        a = dict(flatten(s["contexts"][side]["config"]))
        b = dict(flatten(m["contexts"][side]["config"]))
        lines.append(f"\n{side} TLS context (static {s['contexts'][side]['where']!r}, mesh "
                     f"{m['contexts'][side]['where']!r}): field | static mTLS pair | mesh pair")
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key, "-"), b.get(key, "-")
            if "inline_string" in key:
                va, vb = ("(inline PEM)" if v != "-" else v for v in (va, vb))
            mark = "   " if va == vb else " ! "
            lines.append(f"{mark}{key} | {va[:70]} | {vb[:70]}")
        sa, sb = _stat_rows(s["stats"][side], s["requests"]), _stat_rows(m["stats"][side], m["requests"])
        lines.append(f"{side} statistics (Envoy's counters, all TLS contexts of this side): name | static | mesh")
        for key in sorted(set(sa) | set(sb)):
            va, vb = sa.get(key, "-"), sb.get(key, "-")
            lines.append(f"   {key} | {va} | {vb}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison (and write it as JSON with --json)."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane.tls_compare", description=__doc__)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--envoy-concurrency", type=int, default=1)
    p.add_argument("--json", type=pathlib.Path)
    a = p.parse_args(argv)
    doc = run(a.rate, a.connections, a.duration, a.envoy_concurrency)
    print(render(doc))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2, default=str))
    print("done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
