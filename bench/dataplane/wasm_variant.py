"""Istio's metrics by a Wasm filter, as variants of the static sidecar copy (session 15, issue 10; bench only).

"wasm": on every HCM that exchanges peer metadata, the stock filters (header_mutation adding ours and removing
the peer's, header_to_metadata / set_filter_state reading the peer's) and the stats access logger are replaced by
one proxy-wasm filter (bench/dataplane/wasm_stats, Rust, V8 runtime, one VM per worker) that sends the same
headers, reads and removes the peer's, and keeps the same four stats per request (a requests counter and three
histograms named by a key with the logger's label inputs). "wasm, no-op": the same filter doing nothing per
request (V8's fixed cost per stream). `python -m bench.dataplane.instructions --features wasm` counts them;
`python -m bench.dataplane.wasm_variant --check` proves the variant works (200s, the peers' metadata read off the
wire both ways, the Wasm metrics counted once per request) before anything is counted.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.dataplane import sidecar_static as ss
from bench.dataplane.errors import BenchError
from bench.dataplane.wasm_build import wasm_path
from sailmesh.api.identity import Identity

Config = dict[str, Any]
STATS_LOGGER = "envoy.access_loggers.stats"
MX_READ, MX_ADD = "istio.metadata_exchange.read", "istio.metadata_exchange.add"
PEER_MD, PEER_ID = "x-envoy-peer-metadata", "x-envoy-peer-metadata-id"
WASM_FILTER = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
VM_ID = ROOT_ID = "sailmesh_stats"
METRIC_PREFIX = "sailmesh_wasm"  # lib.rs PREFIX
METRICS = ("requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes")


@dataclass(frozen=True)
class Side:
    """What one HCM's filter does: its mode (client adds to requests, server to responses), the key's constant
    fields (reporter, services) and our own two header values."""

    mode: str
    reporter: str
    services: str
    metadata: str
    node_id: str
    local_san: str = ""

    def configuration(self, noop: bool = False, work: str = "full") -> str:
        """The filter's plugin configuration (lib.rs `parse`: key=value lines; `work` full, lean or headers)."""
        return "\n".join(f"{k}={v}" for k, v in (
            ("mode", "noop" if noop else self.mode), ("work", work), ("local_san", self.local_san),
            ("reporter", self.reporter), ("services", self.services), ("metadata", self.metadata),
            ("id", self.node_id)))


def _named(filters: list[Config], name: str) -> Config | None:
    return next((f for f in filters if f.get("name") == name), None)


def local_san(cfg: Config) -> str:
    """The copy's own URI SAN (its static `default` certificate's identity, bench/dataplane/sidecar_static.py)."""
    meta = cfg.get("node", {}).get("metadata", {})
    return Identity(ss.TRUST_DOMAIN, str(meta.get("NAMESPACE", "default")),
                    str(meta.get("SERVICE_ACCOUNT", "default"))).uri


def side_of(hcm: Config, san: str = "") -> Side | None:
    """The Wasm filter's settings for an HCM with the stock metadata exchange and a stats logger (else None)."""
    filters = hcm.get("http_filters", [])
    add = _named(filters, MX_ADD)
    logger = _named(hcm.get("access_log", []), STATS_LOGGER)
    if add is None or _named(filters, MX_READ) is None or logger is None:
        return None
    muts = add["typed_config"]["mutations"]
    client = any("append" in m for m in muts.get("request_mutations", []))
    ours = {m["append"]["header"]["key"]: m["append"]["header"]["value"]
            for m in muts.get("request_mutations" if client else "response_mutations", []) if "append" in m}
    stats = [*logger["typed_config"].get("counters", []), *logger["typed_config"].get("histograms", [])]
    key = next(t["value_format"] for t in stats[0]["stat"]["tags"] if t["name"] == "k")
    reporter, services = key.split("\n")[:2]
    return Side("client" if client else "server", reporter, services, ours[PEER_MD], ours[PEER_ID], san)


def wasm_filter(side: Side, code: pathlib.Path, noop: bool = False, work: str = "full") -> Config:
    """envoy.filters.http.wasm running the bench filter under V8 (one VM per worker, shared by the listeners)."""
    return {"name": WASM_FILTER, "typed_config": {"@type": WASM_TYPE, "config": {
        "name": f"{ROOT_ID}_{side.mode}", "root_id": ROOT_ID,
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": side.configuration(noop, work)},
        "vm_config": {"vm_id": VM_ID, "runtime": "envoy.wasm.runtime.v8", "allow_precompiled": True,
                      "code": {"local": {"filename": str(code)}}}}}}


def with_wasm(cfg: Config, code: pathlib.Path, noop: bool = False, work: str = "full") -> None:
    """Replace the metadata-exchange filters and the stats logger by the Wasm filter, where the HCM has them
    (the filter takes the reading filter's place in the chain; other access logs stay)."""
    for hcm in _mx_hcms(cfg):
        side = side_of(hcm, local_san(cfg))
        assert side is not None
        hcm["http_filters"] = [wasm_filter(side, code, noop, work) if f.get("name") == MX_READ else f
                               for f in hcm["http_filters"] if f.get("name") != MX_ADD]
        hcm["access_log"] = [al for al in hcm["access_log"] if al.get("name") != STATS_LOGGER]
        if not hcm["access_log"]:
            del hcm["access_log"]


def _mx_hcms(cfg: Config) -> Iterator[Config]:
    yield from (hcm for hcm in list(ss._all_hcms(cfg)) if side_of(hcm) is not None)


def wasm_stats(cfg: Config) -> None:
    """The variant "wasm" (builds the filter on first use)."""
    with_wasm(cfg, wasm_path())


def wasm_noop(cfg: Config) -> None:
    """The variant "wasm, no-op"."""
    with_wasm(cfg, wasm_path(), noop=True)


def wasm_lean(cfg: Config) -> None:
    """The same key from fewer host properties (lib.rs `Work::Lean`)."""
    with_wasm(cfg, wasm_path(), work="lean")


def wasm_headers_only(cfg: Config) -> None:
    """Diagnostic: the Wasm filter's metadata exchange alone, no stats (what the four stats cost in Wasm)."""
    with_wasm(cfg, wasm_path(), work="headers")


def stock_exchange_only(cfg: Config) -> None:
    """Diagnostic: the stock metadata exchange kept, no stats logger (other access logs kept): the comparator of
    "wasm, headers only"."""
    for hcm in _mx_hcms(cfg):
        hcm["access_log"] = [al for al in hcm["access_log"] if al.get("name") != STATS_LOGGER]


WASM_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("wasm: metadata exchange + 4 stats in a Wasm filter", wasm_stats),
    ("wasm, fewer host properties (same key)", wasm_lean),
    ("wasm, headers only: no stats (diagnostic)", wasm_headers_only),
    ("stock exchange, no stats logger (diagnostic)", stock_exchange_only),
    ("wasm, no-op (V8's fixed cost per request)", wasm_noop),
    ("no Istio metrics", ss.drop_istio_metrics),
]

_COUNT = re.compile(r"^(\S+?)_count(?:\{[^}]*\})? (\d+)$")


def metric_counts(prometheus_text: str) -> dict[str, int]:
    """Requests counted per Wasm metric (summed over keys) from an Envoy's /stats/prometheus page: the counter's
    value, each histogram's _count."""
    out = dict.fromkeys(METRICS, 0)
    for line in prometheus_text.splitlines():
        if METRIC_PREFIX not in line or line.startswith("#"):
            continue
        for m in METRICS:
            if f"{METRIC_PREFIX}_{m}_" not in line.split("{")[0] + "_":
                continue
            hist = _COUNT.match(line)
            if m == "requests_total" and not line.split("{")[0].endswith(("_bucket", "_sum", "_count")):
                out[m] += int(float(line.rsplit(" ", 1)[1]))
            elif hist is not None and m != "requests_total":
                out[m] += int(hist.group(2))
    return out


def check(requests: int, capture: pathlib.Path | None, work: str = "full") -> dict[str, Any]:
    """Run the "wasm" variant's copies (`work` as lib.rs: full or lean; no callgrind) and check it works: every
    request 200 without the peer's headers reaching the caller, each side's stats keyed by the other side's metadata
    (read off the wire), each of the four metrics counted once per request on both Envoys. Returns what it saw."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    from bench.dataplane import mesh_config
    from bench.dataplane.ablation import als_receivers, start_copy
    from bench.dataplane.instructions import captured, hey
    from bench.dataplane.setups import ROOT
    from bench.static_envoy import DIE_WITH_HARNESS

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sailmesh-wasm-check-"))
    cap = captured(workdir, capture)
    cli_cfg, srv_cfg = ss.to_static(cap.client), ss.to_static(cap.server)
    sides = {n: [side_of(h) for h in ss._all_hcms(c) if side_of(h)] for n, c in (("client", cli_cfg),
                                                                               ("server", srv_cfg))}
    with_wasm(cli_cfg, wasm_path(), work=work)
    with_wasm(srv_cfg, wasm_path(), work=work)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend", "--host", cap.server_ip, "--port",
                                str(cap.app_port)], stdout=subprocess.DEVNULL, env=env, cwd=ROOT,
                               preexec_fn=DIE_WITH_HARNESS)
    stop_als, _ = als_receivers([cli_cfg, srv_cfg], env)
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    seen: dict[str, Any] = {}
    try:
        srv = start_copy(srv_cfg, cap.server_ip, workdir, "server", 1)
        try:
            cli = start_copy(cli_cfg, cap.client_ip, workdir, "client", 1)
            try:
                url = f"http://{cap.client_ip}:15001/"
                req = urllib.request.Request(url, headers={"Host": mesh_config.HOST_HEADER})
                with no_proxy.open(req, timeout=10) as resp:
                    seen["status"] = resp.status
                    seen["peer_headers_to_caller"] = [h for h in (PEER_MD, PEER_ID) if resp.headers.get(h)]
                hey(url, mesh_config.HOST_HEADER, requests - 1, 1)
                time.sleep(2.5)  # histograms reach the page at the stats flush (the agent's 1 s)
                for name, ip in (("client", cap.client_ip), ("server", cap.server_ip)):
                    text = no_proxy.open(f"http://{ip}:15000/stats/prometheus", timeout=10).read().decode()
                    plain = no_proxy.open(f"http://{ip}:15000/stats?filter={METRIC_PREFIX}", timeout=10).read()
                    seen[name] = {"counts": metric_counts(text), "names": plain.decode().splitlines()[:8]}
            finally:
                cli.stop()
        finally:
            srv.stop()
    finally:
        stop_als()
        backend.terminate()
        backend.wait(5)
    problems = []
    if seen.get("status") != 200 or seen.get("peer_headers_to_caller"):
        problems.append(f"first request: {seen.get('status')}, peer headers to the caller "
                        f"{seen.get('peer_headers_to_caller')}")
    for name, other in (("client", "server"), ("server", "client")):
        if seen[name]["counts"] != dict.fromkeys(METRICS, requests):
            problems.append(f"{name}: counts {seen[name]['counts']}, want {requests} each")
        theirs = next(s.metadata for s in sides[other] if s.mode == ("server" if name == "client" else "client"))
        if not any(theirs in line for line in seen[name]["names"]):
            problems.append(f"{name}: no stat keyed by the {other}'s metadata: {seen[name]['names'][:2]}")
        if not all(";200;" in line and line.count("spiffe://") == 2 for line in seen[name]["names"]):
            problems.append(f"{name}: a key without its response code or both URI SANs: {seen[name]['names'][:2]}")
    seen["problems"] = problems
    if problems:
        raise BenchError(f"the wasm variant does not work (configs, logs in {workdir}): {json.dumps(seen)[:3000]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return seen


def main(argv: list[str] | None = None) -> int:
    """--check: prove the "wasm" variant works; else build the filter and print its path."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane.wasm_variant", description=__doc__)
    p.add_argument("--check", action="store_true")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--work", choices=["full", "lean"], default="full", help="the filter's per-request work")
    p.add_argument("--capture", type=pathlib.Path, metavar="FILE",
                   help="reuse the mesh pair's config dumps from FILE (captured and written there when absent)")
    a = p.parse_args(argv)
    if not a.check:
        print(wasm_path())
        return 0
    seen = check(a.requests, a.capture, a.work)
    for name in ("client", "server"):
        print(f"{name}: {seen[name]['counts']}")
        for line in seen[name]["names"][:4]:
            print(f"    {line[:200]}")
    print(f"first request {seen['status']}, peer headers reaching the caller: {seen['peer_headers_to_caller']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
