"""The ablation tool's static copies of the sidecars work: the real pair's config, run statically, serves requests."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.dataplane import ablation, mesh_config, sidecar_cuts, sidecar_static
from bench.static_envoy import DIE_WITH_HARNESS
from sailmesh.testing.waiting import wait_for
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, host: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    req.add_header("Host", host)
    with NO_PROXY.open(req, timeout=5) as r:
        return r.status, r.read()


@pytest.mark.parametrize("features", ["default", "demo", "metrics", "cuts"])
def test_static_copies_of_the_sidecar_pair_serve_through_both(tmp_path: Path, features: str) -> None:
    variants = {"demo": sidecar_static.DEMO_VARIANTS, "metrics": sidecar_static.METRICS_VARIANTS,
                "cuts": sidecar_cuts.CUT_VARIANTS}.get(features, sidecar_static.VARIANTS)
    alone = features in ablation.ALTERNATIVES
    make = sidecar_static.alternative_configs if alone else sidecar_static.variant_configs
    cap = ablation.capture(tmp_path, 1, "demo" if features == "demo" else "default")
    client, server = sidecar_static.to_static(cap.client), sidecar_static.to_static(cap.server)
    assert "dynamic_resources" not in client
    assert all(c.get("type") != "EDS" and c["name"] != "xds-grpc" for c in client["static_resources"]["clusters"])
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend", "--host", cap.server_ip, "--port",
                                str(cap.app_port)], stdout=subprocess.DEVNULL, cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=DIE_WITH_HARNESS)
    try:
        wait_for(lambda: NO_PROXY.open(f"http://{cap.server_ip}:{cap.app_port}/", timeout=1).status == 200,
                 timeout=15, what="backend")
        clients, servers = make(client, variants), make(server, variants)
        assert len(clients) == len(variants)
        # the first (full sidecar config) and the last (everything stripped) variants both route; every
        # alternative of the metrics and cuts sets does
        for i in range(len(clients)) if alone else (0, len(clients) - 1):
            srv = ablation.start_copy(servers[i][1], cap.server_ip, tmp_path, f"server-{i}", 1)
            try:
                cli = ablation.start_copy(clients[i][1], cap.client_ip, tmp_path, f"client-{i}", 1)
                try:
                    status, body = _get(f"http://{cap.client_ip}:15001/", mesh_config.HOST_HEADER)
                    assert status == 200 and len(body) == 1024, clients[i][0]
                finally:
                    cli.stop()
            finally:
                srv.stop()
    finally:
        backend.terminate()
        backend.wait(5)
    first, last = clients[0][1], clients[-1][1]
    if features == "cuts":  # each variant changes the copy (a no-op would measure nothing)
        unchanged = [n for (n, c), (_, sv) in zip(clients[1:], servers[1:], strict=True)
                     if c == first and sv == servers[0][1]]
        assert not unchanged
        return
    if features == "metrics":  # alternatives: each changes only its part of the copy
        by_name = dict(clients)
        def buffers(cfg: dict[str, Any]) -> set[int]:
            return {al["typed_config"]["common_config"]["buffer_size_bytes"] for logs in
                    sidecar_static._access_logs(cfg) for al in logs if "common_config" in al.get("typed_config", {})}
        assert buffers(first) == {65536}
        assert buffers(by_name["access-log stream, 16 KiB buffer (Envoy's default)"]) == {16384}
        text = [al["name"] for logs in sidecar_static._access_logs(
            by_name["text access log to a file instead of the stream"]) for al in logs]
        assert "envoy.access_loggers.file" in text and not any(n.endswith("_grpc") for n in text)
        assert not list(sidecar_static._access_logs(last))
        return
    if features == "demo":
        # the demo's policy is in the copy (retries with a per-try timeout, pool limits) and gone at the end
        actions = [r["route"] for _, r in sidecar_static._all_routes(first) if "route" in r]
        assert any(a.get("retry_policy", {}).get("per_try_timeout") == "2s" and a.get("timeout") == "10s"
                   for a in actions)
        assert not any("retry_policy" in r.get("route", {}) for _, r in sidecar_static._all_routes(last))
        assert not any("circuit_breakers" in c for c in last["static_resources"]["clusters"])
        return
    hcm = next(sidecar_static.hcms(last["static_resources"]["listeners"][-1]))
    assert [f["name"] for f in hcm["http_filters"]] == [sidecar_static.ROUTER]
    assert "stats_config" not in last and "overload_manager" not in last
