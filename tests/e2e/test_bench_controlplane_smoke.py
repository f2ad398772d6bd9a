"""Control-plane benchmark smoke: a real `sailmesh controlplane`, lean ADS clients and a real Envoy; sane numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_smoke_cli_measures_pushes_convergence_and_memory(tmp_path) -> None:
    out = tmp_path / "smoke.json"
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "bench.controlplane", "--smoke", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    elapsed = time.monotonic() - started
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    assert doc["meta"]["mode"] == "smoke"
    (case,) = doc["cases"]
    assert "error" not in case, case
    assert (case["services"], case["proxies"], case["sidecar_scoping"]) == (20, 5, True)

    # every proxy got clusters (20 services: default + 2-3 subsets each), endpoints, listeners and routes
    sizes = case["resources_per_proxy"]
    assert sizes["cds"]["min"] >= 20 * 3 and sizes["eds"]["min"] >= 20 * 3
    assert sizes["lds"]["min"] >= 1 and sizes["rds"]["min"] >= 1
    assert 0 < case["first_push"]["all_synced_s"] < 30

    vs, ep = case["vs_change"], case["endpoint_change"]
    for ch in (vs, ep):
        assert ch["n"] == 3 and len(ch["latencies_s"]) == 3
        assert all(0 < x < 30 for x in ch["latencies_s"])
        assert ch["p50_s"] <= ch["p99_s"] <= ch["max_s"]
        assert ch["buckets"]["+Inf"] == 3 and ch["buckets"]["30"] == 3
        assert ch["cpu_per_push_s"] >= 0 and ch["clients_cpu_per_push_s"] >= 0
    # a VirtualService change reaches every proxy as RDS (4 lean clients + 1 Envoy) and sends no CDS/EDS/LDS
    assert vs["responses_sent_by_type"]["rds"] >= 3 * 5
    assert all(vs["responses_sent_by_type"].get(t, 0) == 0 for t in ("cds", "eds", "lds")), vs
    # an endpoint change is an EDS-only push
    assert ep["responses_sent_by_type"]["eds"] >= 3 * 5
    assert all(ep["responses_sent_by_type"].get(t, 0) == 0 for t in ("cds", "lds", "rds")), ep
    assert not ep["other_types_received"] and not vs["other_types_received"]
    # the real Envoy got the same resources as its lean twin, ACKed them, and applied each route change
    env = case["envoys"]
    assert env["count"] == 1 and env["synced_at_end"] is True
    assert all(c["same_as_twin"] is True for c in env["checks"]), env
    assert env["envoy0_active_clusters"] == sizes["cds"]["min"]
    assert env["same_names_as_twin"] == 1  # cluster names and route virtual hosts equal the twin's
    assert vs["envoy"]["n"] == 3

    # memory: measured from /proc, positive and per proxy
    assert case["rss_0_proxies_mb"] > 10 and case["rss_mb"] >= case["rss_0_proxies_mb"] * 0.9
    assert math.isfinite(case["mb_per_proxy"])
    # the server's own convergence histogram saw the pushes
    hist = case["server_metrics"]["pilot_proxy_convergence_time"]
    assert hist["rds"]["count"] >= 3 * 5
    text = p.stdout
    assert "CSRs signed per second per core" in text and "target: convergence p99" in text
    csr = doc["csr"]  # the CA's signing rate, alone and through a real control plane's certificate service
    assert csr["sign_only"]["ecdsa_p256"]["per_cpu_second"] > 0
    assert csr["grpc"]["one_channel"]["csrs"] == csr["grpc"]["channel_per_csr"]["csrs"] == 100
    assert elapsed < 60, f"--smoke took {elapsed:.0f} s"


def test_smoke_with_trace_times_each_stage_of_every_push(tmp_path) -> None:
    """--trace runs the control plane under bench.controlplane.trace: every push's stages come back in order."""
    out = tmp_path / "trace.json"
    p = subprocess.run([sys.executable, "-m", "bench.controlplane", "--smoke", "--trace", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    (case,) = json.loads(out.read_text())["cases"]
    stages = case["push_stages"]
    assert stages["apply"]["pushes"] == 3  # one push per VirtualService change
    assert stages["workloads"]["pushes"] >= 3  # one per workload-file change (a re-read may push twice)
    for kind in ("apply", "workloads"):
        for row in ("p50", "max"):
            s = stages[kind][row]
            order = [s[k] for k in ("submit", "push", "built", "updated", "fanout_done", "respond_first",
                                    "respond_last", "acks_last")]
            assert order == sorted(order) and order[0] >= 0, (kind, row, s)
            assert s["responses"] >= 5  # every proxy (4 lean clients and the Envoy) got the pushed type
    assert "push stages, VirtualService (HTTP apply)" in p.stdout


def test_workers_floor_spreads_the_streams_over_server_processes(tmp_path) -> None:
    out = tmp_path / "workers.json"
    p = subprocess.run([sys.executable, "-m", "bench.controlplane.workers_floor", "--streams", "20", "--size", "1000",
                        "--rounds", "2", "--servers", "1", "2", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    one, two = json.loads(out.read_text())["results"]
    assert (one["servers"], two["servers"]) == (1, 2)
    for res in (one, two):
        assert len(res["rounds"]) == 2
        for r in res["rounds"]:
            assert sum(r["streams_per_server"]) == 20 and len(r["streams_per_server"]) == res["servers"]
            assert r["wall_ms"] > 0 and r["server_cpu_ms"] >= 0 and r["client_cpu_ms"] >= 0


@pytest.mark.parametrize("connections", ["shared", "per-stream"])
def test_grpc_floor_measures_push_and_acks_on_bare_grpc(tmp_path, connections) -> None:
    """The floor benchmark (no sailmesh code in the push path) runs and reports every round."""
    out = tmp_path / "floor.json"
    p = subprocess.run([sys.executable, "-m", "bench.controlplane.grpc_floor", "--streams", "20", "--size", "1000",
                        "--rounds", "3", "--connections", connections, "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    assert doc["streams"] == 20 and len(doc["rounds"]) == 3
    assert doc["own_connections"] is (connections == "per-stream")
    assert all(r["wall_ms"] > 0 and r["server_cpu_ms"] >= 0 for r in doc["rounds"])
    assert "push + all ACKs" in p.stdout
