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
# Measured 2026-11-29 18:16-18:27 UTC (a clean-clone CI run, `.ci/run`, nothing else on the machine; the 60
# longest files of its "seconds per test file" summary, printed at the end of every full run).
EXPECTED_FILE_S: dict[str, float] = {
    "tests/e2e/reliability/test_soak.py": 123,
    "tests/e2e/test_kube_controlplane_wait.py": 66,
    "tests/e2e/test_mesh_cert_rotation.py": 63,
    "tests/e2e/test_kube_gatewayapi.py": 46,
    "tests/e2e/test_bench_smoke.py": 44,
    "tests/e2e/test_platform_probes.py": 39,
    "tests/e2e/test_mesh_locality.py": 36,
    "tests/e2e/test_kube_bookinfo.py": 31,
    "tests/e2e/test_telemetry_envoy.py": 31,
    "tests/e2e/test_mesh_explain_more.py": 30,
    "tests/e2e/test_mesh_metrics.py": 29,
    "tests/e2e/test_mesh_bookinfo.py": 25,
    "tests/e2e/reliability/test_config_churn.py": 24,
    "tests/e2e/test_mesh_explain.py": 21,
    "tests/e2e/test_mesh_mtls.py": 19,
    "tests/e2e/test_mesh_tracing_otlp.py": 19,
    "tests/e2e/test_platform_stop.py": 19,
    "tests/e2e/reliability/test_sidecar_drain.py": 18,
    "tests/e2e/test_kube_crd_lifecycle.py": 18,
    "tests/e2e/test_platform_crash.py": 18,
    "tests/e2e/test_dashboard_browser.py": 18,
    "tests/e2e/test_mesh_gatewayapi.py": 18,
    "tests/e2e/test_platform_probes_exec_grpc.py": 17,
    "tests/e2e/test_mesh_tracing.py": 17,
    "tests/e2e/test_agent_lifecycle.py": 16,
    "tests/e2e/test_kube_admission.py": 16,
    "tests/e2e/test_bench_controlplane_smoke.py": 13,
    "tests/e2e/test_kube_ca_rotation.py": 13,
    "tests/e2e/test_kube_identity.py": 12,
    "tests/e2e/test_dashboard_bookinfo.py": 12,
    "tests/e2e/test_mesh_security_policies.py": 12,
    "tests/e2e/test_bench_mesh_ablation.py": 12,
    "tests/e2e/test_kube_configmaps.py": 12,
    "tests/e2e/test_kube_gatewayapi_more.py": 12,
    "tests/e2e/test_mesh_root_rotation.py": 11,
    "tests/e2e/reliability/test_controlplane_restart.py": 11,
    "tests/unit/test_code_quality.py": 10,
    "tests/e2e/test_platform_jobs.py": 10,
    "tests/e2e/test_mesh_resilience.py": 10,
    "tests/e2e/test_captured_passthrough_netns.py": 10,
    "tests/e2e/test_bookinfo_envoy_proxy.py": 10,
    "tests/e2e/test_kube_injected_pods.py": 9,
    "tests/e2e/test_kube_replicas.py": 9,
    "tests/e2e/test_mesh_gatewayapi_policies.py": 9,
    "tests/e2e/test_mesh_gatewayapi_tls.py": 8,
    "tests/e2e/test_mesh_tcp_metrics.py": 8,
    "tests/e2e/test_mesh_gatewayapi_listeners.py": 8,
    "tests/e2e/test_platform_start.py": 8,
    "tests/e2e/test_kube_apiserver.py": 8,
    "tests/unit/test_server_hostile.py": 8,
    "tests/e2e/test_mesh_egress_gateway.py": 8,
    "tests/e2e/test_mesh_passthrough_instances.py": 8,
    "tests/e2e/test_mesh_cli.py": 7,
    "tests/e2e/test_kube_cli.py": 7,
    "tests/unit/test_agent_renewal.py": 7,
    "tests/e2e/test_mesh_destination_rule_more.py": 7,
    "tests/e2e/test_mesh_envoyfilter.py": 7,
    "tests/e2e/test_mesh_authz_bookinfo.py": 7,
    "tests/e2e/reliability/test_invalid_config.py": 7,
    "tests/e2e/test_mesh_ratelimit.py": 7,
}
UNLISTED_E2E_S = 6.0  # below the table's shortest


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
