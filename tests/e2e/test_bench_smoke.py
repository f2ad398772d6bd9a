"""Data-plane benchmark smoke: every set-up starts (real backend, real Envoys, real load) and the numbers parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.dataplane import loadgen
from bench.dataplane.analysis import TARGET_RSS_MB
from bench.dataplane.mesh import DEFAULT_TRANSPORT_NOTE
from bench.dataplane.runner import RunConfig, run
from bench.dataplane.setups import static_pair
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def _check_measured(r: dict, rate: float) -> None:
    fr = r["fixed_rate"]
    assert r["available"] is True
    assert 0 < fr["p50_ms"] <= fr["p90_ms"] <= fr["p99_ms"] < 1000, fr
    assert fr["errors"] == 0 and fr["requests"] > 0
    # The load was paced (never above the rate) and ran; how close it came to the rate depends on how busy the
    # machine is (a loaded 2-core machine gave 72 % of it), which is the benchmark's business, not this test's.
    assert 0.25 * rate < fr["achieved_rps"] < 1.5 * rate, fr
    assert r["saturation"]["rps"] > 0 and r["saturation"]["errors"] == 0
    assert r["backend"]["cpu_s"] >= 0


def test_smoke_cli_runs_all_seven_setups(tmp_path) -> None:
    """`--smoke` measures (1) direct, (2) the static pair, (2m) the static mTLS pair and (3)/(4)/(3n)/(3t) the real
    sailmesh sidecar pair."""
    out = tmp_path / "smoke.json"
    p = subprocess.run([sys.executable, "-m", "bench.dataplane", "--smoke", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    tools = loadgen.tools_available()
    if tools["wrk"]:
        assert doc["meta"]["loadgen"] == {"fixed_rate": "wrk", "saturation": "wrk"}
    else:  # no wrk here: the smoke mode must have used (and said it used) the fallback generator
        assert doc["meta"]["loadgen"]["saturation"] == "python-fallback"
        assert any("fallback" in n for n in doc["meta"]["notes"]), doc["meta"]["notes"]
        assert "fallback" in p.stdout
    rate = doc["meta"]["config"]["rate"]
    s = doc["setups"]
    _check_measured(s["direct"], rate)
    _check_measured(s["static"], rate)
    _check_measured(s["static_mtls"], rate)  # (2m): the same pair with a mutual-TLS hop (it must answer through TLS)
    assert s["direct"]["envoys"] == {}
    assert set(s["static"]["envoys"]) == set(s["static_mtls"]["envoys"]) == {"envoy-a", "envoy-b"}
    assert "mutual TLS" in s["static_mtls"]["transport"]
    for e in [*s["static"]["envoys"].values(), *s["static_mtls"]["envoys"].values()]:
        assert e["cpu_s"] > 0 and 0 < e["vcpu"] < 2.0
        assert 5 < e["peak_rss_mb"] < 4 * TARGET_RSS_MB
        assert 0 < e["rss_anon_mb"] < e["peak_rss_mb"]
    # (No latency comparison between set-ups here: a smoke run lasts seconds, and timing belongs in the benchmark.
    # That the pair's requests went through both Envoys is the CPU check above.)
    # (3), (4), (3n) and (3t): two real sailmesh sidecar Envoys each, measured like the static pair
    for name in ("mesh", "mesh_demo", "mesh_nometrics", "mesh_notelemetry"):
        assert s[name]["available"] is True, s[name]
        _check_measured(s[name], rate)
        assert s[name]["transport"] == DEFAULT_TRANSPORT_NOTE
        assert set(s[name]["envoys"]) == {"client-sidecar", "server-sidecar"}
        for e in s[name]["envoys"].values():
            assert e["cpu_s"] > 0 and 0 < e["vcpu"] < 2.0
            assert 5 < e["peak_rss_mb"] < 4 * TARGET_RSS_MB
    assert any("AuthorizationPolicy" in n for n in s["mesh_demo"]["notes"]), s["mesh_demo"]["notes"]
    assert any("ALL_METRICS disabled" in n for n in s["mesh_nometrics"]["notes"]), s["mesh_nometrics"]["notes"]
    assert any("PILOT_ENABLE_METADATA_EXCHANGE=false" in n for n in s["mesh_notelemetry"]["notes"])
    for key in ("mesh/direct", "mesh/static", "mesh/static_mtls", "mesh_demo/static", "mesh_nometrics/static_mtls",
                "mesh_notelemetry/static_mtls"):
        assert all(v is not None and v > 0 for v in doc["ratios"]["latency"][key].values()), doc["ratios"]
    for name in ("static", "static_mtls", "mesh", "mesh_demo", "mesh_nometrics", "mesh_notelemetry"):
        assert doc["ratios"]["added_ms"][name]["p50"] is not None
    assert all(t["value"] is not None for t in doc["targets"] if "per sidecar" in t["target"]), doc["targets"]
    assert "(3) sailmesh pair" in p.stdout and "not available yet" not in p.stdout


def test_pluggable_pair_factory_fills_setups_3_and_4(tmp_path) -> None:
    """The interface the lead wires the mesh into: here the static pair stands in for the sidecars."""
    calls: list[str] = []

    def provider(features: str):
        calls.append(features)
        return static_pair

    cfg = RunConfig(mode="smoke", duration=1, rate=200, connections=8, rounds=1, saturation_s=1, warmup_s=0,
                    mesh_provider=provider,
                    loadgen="auto" if loadgen.tools_available()["wrk"] else "python")
    doc = run(cfg)
    assert calls == ["default", "demo", "nometrics", "notelemetry"]
    for name in ("direct", "static", "mesh", "mesh_demo"):
        _check_measured(doc["setups"][name], cfg.rate)
    assert doc["setups"]["mesh"]["transport"] == DEFAULT_TRANSPORT_NOTE
    for key in ("mesh/direct", "mesh/static", "mesh/static_mtls", "mesh_demo/static"):
        assert all(v is not None and v > 0 for v in doc["ratios"]["latency"][key].values()), doc["ratios"]
    assert all(t["value"] is not None for t in doc["targets"] if "per sidecar" in t["target"])


def test_failing_mesh_factory_is_reported_not_fatal() -> None:
    """(3) fails to start, (4) loses a measured process mid-run: both reported, (1)/(2) still measured."""
    ghost = subprocess.Popen([sys.executable, "-c", "pass"])
    ghost.wait()  # reaped: its pid has no /proc entry any more

    def broken(backend, ctx):
        raise OSError("sidecar did not start")

    def dies_mid_run(backend, ctx):
        handle = static_pair(backend, ctx)
        handle.envoy_pids["gone"] = ghost.pid
        return handle

    cfg = RunConfig(mode="smoke", duration=1, rate=100, connections=4, rounds=1, saturation_s=1, warmup_s=0,
                    mesh_provider=lambda f: broken if f == "default" else dies_mid_run, loadgen="python")
    doc = run(cfg)
    mesh, demo = doc["setups"]["mesh"], doc["setups"]["mesh_demo"]
    assert mesh["available"] is False and "sidecar did not start" in mesh["reason"]
    assert demo["available"] is False and demo["reason"].startswith("failed during round 1"), demo
    assert doc["setups"]["direct"]["available"] and doc["setups"]["static"]["available"]
    assert doc["ratios"]["latency"]["mesh_demo/static"]["p50"] is None
