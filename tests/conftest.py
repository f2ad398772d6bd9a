"""Shared pytest setup: child processes find the package; paths to Istio's conformance data."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# ../shared next to the checkout (CI, /work/main); two levels up for git worktrees under /work/wt/.
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()),
              ROOT.parent / "shared")
CONFORMANCE = SHARED / "conformance"

# Tests never talk to a mesh the user runs in ~/.sailmesh (`analyze`, `get`, ... find a running mesh there).
os.environ.setdefault("SAILMESH_STATE_DIR", tempfile.mkdtemp(prefix="sailmesh-tests-"))
# Child processes (agents, sample apps, the control plane) import sailmesh from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def conformance() -> pathlib.Path:
    """Istio's conformance data (../shared/conformance); tests that need it skip without it."""
    if not CONFORMANCE.is_dir():
        pytest.skip(f"Istio conformance data not found at {CONFORMANCE} (needs the ../shared folder)")
    return CONFORMANCE


# -- scheduling: the longest test files start first ---------------------------------------------------------------
# `pytest -n 2 --dist loadfile` runs each file on one worker. xdist hands files out biggest test count first, which
# puts the long one-test e2e files last, so one worker ran a long file alone at the end. Here files start in order of
# their expected duration, longest first (then the unit files, as filler), and xdist keeps that order
# (loadscopereorder off). Seconds per file on one worker (sum of the tests' setup + call + teardown, from
# --junitxml of a full run); a file not listed counts as UNLISTED_E2E_S (e2e) or 0 (unit). Only the order depends on
# these numbers: a stale table makes the run longer, never a test different.
# Measured 2026-11-29 (full run at load ~20, files of 20 s or more; kube modules before the shared cluster); the
# mTLS and security-policy files scaled by their own before/after ratio alone (session 8, two pairs each: 164 -> 83
# and 240 -> 138 s; 135 -> 81 and 109 -> 105 s).
EXPECTED_FILE_S: dict[str, float] = {
    "tests/e2e/test_mesh_explain.py": 530,
    "tests/unit/test_code_quality.py": 312,
    "tests/e2e/test_mesh_mtls.py": 300,
    "tests/e2e/test_mesh_security_policies.py": 280,
    "tests/e2e/test_mesh_gatewayapi.py": 277,
    "tests/e2e/test_mesh_bookinfo.py": 257,
    "tests/e2e/test_mesh_metrics.py": 205,
    "tests/e2e/test_bench_controlplane_smoke.py": 203,
    "tests/e2e/test_bench_smoke.py": 201,
    "tests/e2e/test_kube_bookinfo.py": 200,
    "tests/e2e/test_platform_crash.py": 193,
    "tests/e2e/test_agent_lifecycle.py": 185,
    "tests/e2e/test_mesh_explain_more.py": 179,
    "tests/e2e/reliability/test_soak.py": 162,
    "tests/e2e/test_mesh_egress_gateway.py": 160,
    "tests/e2e/test_bench_mesh_ablation.py": 153,
    "tests/e2e/test_platform_start.py": 144,
    "tests/e2e/test_mesh_resilience.py": 140,
    "tests/e2e/test_platform_probes.py": 139,
    "tests/e2e/test_platform_stop.py": 134,
    "tests/e2e/test_dashboard_bookinfo.py": 121,
    "tests/e2e/test_mesh_cert_rotation.py": 119,
    "tests/e2e/test_mesh_locality.py": 114,
    "tests/e2e/reliability/test_sidecar_drain.py": 112,
    "tests/e2e/test_kube_identity.py": 111,
    "tests/e2e/test_bench_mesh.py": 108,
    "tests/e2e/test_mesh_cli.py": 107,
    "tests/e2e/test_platform_probes_exec_grpc.py": 107,
    "tests/e2e/test_kube_replicas.py": 105,
    "tests/e2e/test_kube_injected_pods.py": 104,
    "tests/e2e/test_kube_admission.py": 101,
    "tests/e2e/reliability/test_controlplane_restart.py": 99,
    "tests/e2e/test_kube_apiserver.py": 93,
    "tests/unit/test_api_parse.py": 90,
    "tests/e2e/test_mesh_tracing_otlp.py": 89,
    "tests/e2e/test_mesh_authz_bookinfo.py": 89,
    "tests/e2e/test_platform_jobs.py": 85,
    "tests/e2e/test_mesh_gatewayapi_listeners.py": 83,
    "tests/e2e/test_bookinfo_propagation.py": 82,
    "tests/e2e/test_mesh_tracing.py": 72,
    "tests/e2e/reliability/test_config_churn.py": 68,
    "tests/e2e/test_mesh_envoyfilter.py": 67,
    "tests/e2e/test_mesh_global_ratelimit.py": 59,
    "tests/e2e/test_mesh_ratelimit.py": 57,
    "tests/e2e/test_mesh_root_rotation.py": 55,
    "tests/e2e/reliability/test_invalid_config.py": 54,
    "tests/e2e/test_mesh_circuit_breaking.py": 51,
    "tests/e2e/reliability/test_reconnect_storm.py": 49,
    "tests/e2e/test_mesh_tcp_metrics.py": 49,
    "tests/e2e/test_kube_endpointslices.py": 46,
    "tests/e2e/test_mesh_jwt.py": 46,
    "tests/unit/test_server_ads.py": 45,
    "tests/e2e/test_dashboard_browser.py": 39,
    "tests/e2e/test_httpbin_demo.py": 38,
    "tests/e2e/test_mesh_ratelimit_global.py": 38,
    "tests/unit/test_fuzz.py": 37,
    "tests/e2e/test_telemetry_envoy.py": 36,
    "tests/e2e/test_mesh_delegate_source.py": 36,
    "tests/unit/test_install_chart.py": 34,
    "tests/e2e/test_mesh_sidecar_ingress.py": 33,
    "tests/e2e/test_mesh_named_target_port.py": 31,
    "tests/e2e/test_mesh_auto_passthrough.py": 30,
    "tests/unit/test_api_validate_robust.py": 30,
    "tests/e2e/test_mesh_gateway_tls.py": 28,
    "tests/unit/test_cli_startup.py": 27,
    "tests/e2e/test_bookinfo_apps.py": 25,
    "tests/e2e/test_authz_envoy.py": 23,
    "tests/unit/test_analysis_robustness.py": 23,
    "tests/e2e/test_bookinfo_envoy_proxy.py": 23,
    "tests/e2e/test_bookinfo_harness.py": 23,
}
UNLISTED_E2E_S = 30.0


def expected_seconds(path: str) -> float:
    """The expected duration of a test file (path relative to the repo, with /)."""
    if path in EXPECTED_FILE_S:
        return EXPECTED_FILE_S[path]
    return UNLISTED_E2E_S if path.startswith("tests/e2e/") else 0.0


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "dist", "no") in ("loadfile", "loadscope"):
        config.option.loadscopereorder = False  # keep the collection order made below


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files longest first (stable: tests keep their order inside a file, files with equal weight theirs)."""
    def key(item: pytest.Item) -> float:
        return -expected_seconds(item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else "")
    items.sort(key=key)


# -- the table's source: seconds per file, printed at the end of a run of many files --------------------------------
_FILE_S: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    _FILE_S[path] = _FILE_S.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Seconds per test file (setup + call + teardown on its worker), longest first: refresh EXPECTED_FILE_S."""
    if len(_FILE_S) < 20:  # a targeted run: nothing to learn about the suite's order
        return
    terminalreporter.write_sep("-", "seconds per test file, longest 60 (EXPECTED_FILE_S in tests/conftest.py)")
    for path, seconds in sorted(_FILE_S.items(), key=lambda kv: -kv[1])[:60]:
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
