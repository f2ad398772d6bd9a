"""LocalWorkload readinessProbe parsing: Kubernetes' fields and defaults, ports rewritten to the app's port."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import pytest

from sailmesh.api.parse import load_paths
from sailmesh.errors import PlatformError
from sailmesh.platform.kubelet import AppProber, Hooks
from sailmesh.platform.probes import parse
from sailmesh.platform.restart import BackOff, should_restart
from sailmesh.platform.workloads import plan
from sailmesh.processes import free_port

NAMED = {"http": 8000}
APP_PORTS = {8000: 41234}


def test_http_probe_on_a_named_port_goes_to_the_app_port_with_kubernetes_defaults() -> None:
    p = parse({"httpGet": {"path": "/healthz", "port": "http"}}, NAMED, APP_PORTS, "w")
    assert p is not None and (p.kind, p.port, p.path, p.scheme) == ("httpGet", 41234, "/healthz", "HTTP")
    # core/v1 Probe defaults: periodSeconds 10, timeoutSeconds 1, successThreshold 1, failureThreshold 3
    assert (p.period_s, p.timeout_s, p.success_threshold, p.failure_threshold) == (10, 1, 1, 3)


def test_tcp_probe_on_an_undeclared_port_is_kept_and_absent_probe_is_none() -> None:
    p = parse({"tcpSocket": {"port": 9999}, "periodSeconds": 2}, NAMED, APP_PORTS, "w")
    assert p is not None and (p.kind, p.port, p.period_s) == ("tcpSocket", 9999, 2)
    assert parse(None, NAMED, APP_PORTS, "w") is None


def test_exec_and_grpc_probes_keep_kubernetes_fields() -> None:
    e = parse({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 5}, NAMED, APP_PORTS, "w")
    assert e is not None and (e.kind, e.command, e.period_s, e.rewritten) == ("exec", ("cat", "/tmp/healthy"), 5, False)
    g = parse({"grpc": {"port": 8080, "service": "liveness"}}, NAMED, APP_PORTS, "w", "livenessProbe")
    assert g is not None and (g.kind, g.port, g.service, g.rewritten) == ("grpc", APP_PORTS.get(8080, 8080),
                                                                          "liveness", True)
    # Istio's ISTIO_KUBE_APP_PROBERS form of a grpc probe (pilot-agent's Prober.GRPC)
    assert g.prober() == {"grpc": {"port": g.port, "service": "liveness"}, "timeoutSeconds": 1.0}


@pytest.mark.parametrize("spec", [{}, {"httpGet": {"port": "nope"}},
                                  {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}},
                                  {"tcpSocket": {"port": 80}, "periodSeconds": -1},
                                  {"exec": {"command": []}}, {"exec": {"command": "true"}}, {"exec": {}},
                                  {"grpc": {"port": "grpc"}},  # Kubernetes: a number, never a port name
                                  {"grpc": {"port": 80, "service": 3}},
                                  {"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5}])
def test_what_cannot_run_here_is_an_error(spec: dict[str, object]) -> None:
    with pytest.raises(PlatformError):
        parse(spec, NAMED, APP_PORTS, "w")


def test_restart_policy_and_back_off() -> None:
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)
    b = BackOff(initial=1, cap=8, stable=10, limit=3)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert b.failures(2, ran_for=1) == 3 and b.failures(2, ran_for=60) == 1  # a stable run starts again
    assert not b.gives_up(3) and b.gives_up(4)


def test_relative_paths_resolve_against_the_config_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.yaml").write_text(
        "apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata: {name: a}\n"
        "spec: {command: [python, app.py]}\n---\n"
        "apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata: {name: b}\n"
        "spec: {command: [python, app.py], workdir: ../data, holdApplicationUntilProxyStarts: false}\n")
    loaded = load_paths([str(tmp_path)])
    assert not loaded.errors
    a, b = plan(loaded.resources, "127.0.10.2", lambda _ip: 40000)
    assert a.cwd == str(tmp_path / "sub") and a.hold_application
    assert b.cwd is not None and os.path.normpath(b.cwd) == str(tmp_path / "data") and not b.hold_application


def test_liveness_and_startup_need_success_threshold_1_and_unknown_fields_are_refused() -> None:
    """Kubernetes' validation: successThreshold "must be 1 for liveness and startup"; terminationGracePeriodSeconds
    "must not be set for readinessProbes"."""
    spec = {"httpGet": {"port": 8000}, "successThreshold": 2}
    assert parse(spec, NAMED, APP_PORTS, "w", "readinessProbe") is not None
    for field in ("livenessProbe", "startupProbe"):
        with pytest.raises(PlatformError, match="must be 1"):
            parse(spec, NAMED, APP_PORTS, "w", field)
    with pytest.raises(PlatformError, match="terminationGracePeriodSeconds"):
        parse({"tcpSocket": {"port": 8000}, "terminationGracePeriodSeconds": 5}, NAMED, APP_PORTS, "w")


def test_probes_become_istios_app_probers_on_the_app_port(tmp_path: pathlib.Path) -> None:
    """ISTIO_KUBE_APP_PROBERS: /app-health/<container>/livez|readyz|startupz -> the original probe (port rewritten to
    the port the app really listens on behind its sidecar)."""
    (tmp_path / "w.yaml").write_text(
        "apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata: {name: web}\n"
        "spec:\n  command: [python, app.py]\n  ports: [{name: http, containerPort: 8000}]\n"
        "  livenessProbe: {httpGet: {path: /healthz, port: http}}\n"
        "  startupProbe: {tcpSocket: {port: 8000}, failureThreshold: 30, timeoutSeconds: 2}\n")
    loaded = load_paths([str(tmp_path)])
    (web,) = plan(loaded.resources, "127.0.10.2", lambda _ip: 41234)
    assert json.loads(web.app_probers()) == {
        "/app-health/web/livez": {"httpGet": {"path": "/healthz", "port": 41234, "scheme": "HTTP", "httpHeaders": []},
                                  "timeoutSeconds": 1.0},
        "/app-health/web/startupz": {"tcpSocket": {"port": 41234}, "timeoutSeconds": 2.0}}
    assert web.startup_probe is not None and web.startup_probe.failure_threshold == 30


@pytest.mark.parametrize("field", ["livenessProbe", "startupProbe"])
def test_probe_termination_grace_period_as_kubernetes_validates_it(field: str) -> None:
    """Kubernetes' probe-level terminationGracePeriodSeconds (ProbeTerminationGracePeriod, GA in 1.28): liveness and
    startup probes only, an integer greater than 0 (validateProbe: "must be greater than 0"); unset: the pod's."""
    p = parse({"tcpSocket": {"port": 8000}, "terminationGracePeriodSeconds": 3}, NAMED, APP_PORTS, "w", field)
    assert p is not None and p.termination_grace_s == 3
    unset = parse({"tcpSocket": {"port": 8000}}, NAMED, APP_PORTS, "w", field)
    assert unset is not None and unset.termination_grace_s is None
    for bad in (0, -1, 1.5, "5", True):
        with pytest.raises(PlatformError, match="must be greater than 0"):
            parse({"tcpSocket": {"port": 8000}, "terminationGracePeriodSeconds": bad}, NAMED, APP_PORTS, "w", field)
    with pytest.raises(PlatformError, match="must not be set for readinessProbes"):
        parse({"tcpSocket": {"port": 8000}, "terminationGracePeriodSeconds": 3}, NAMED, APP_PORTS, "w",
              "readinessProbe")


@pytest.mark.parametrize(("grace", "expected"), [("    terminationGracePeriodSeconds: 2\n", [(True, 2.0)]),
                                                 ("", [(True,)])])
async def test_a_liveness_kill_uses_the_probes_grace_period(tmp_path: pathlib.Path, grace: str,
                                                            expected: list[tuple[object, ...]]) -> None:
    """The kubelet kills a container whose liveness probe failed with the probe's terminationGracePeriodSeconds when
    it sets one, else with the pod's grace period (the platform's default)."""
    (tmp_path / "w.yaml").write_text(
        "apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata: {name: web}\n"
        "spec:\n  command: [python, app.py]\n  sidecar: false\n"
        f"  livenessProbe:\n    tcpSocket: {{port: {free_port()}}}\n    failureThreshold: 1\n" + grace)
    loaded = load_paths([str(tmp_path)])
    assert not loaded.errors
    (web,) = plan(loaded.resources, "127.0.0.1", lambda _ip: free_port())  # nothing listens there: the probe fails
    kills: list[tuple[object, ...]] = []
    alive = [True]

    async def kill(reason: str, *grace_s: float) -> None:
        kills.append(("liveness probe failed 1 times in a row" in reason, *grace_s))
        alive[0] = False

    hooks = Hooks(alive=lambda: alive[0], mark=lambda _k, _d: False, kill=kill, say=lambda _line: None)
    await asyncio.wait_for(AppProber(web, hooks, free_port()).run(), 30)
    assert kills == expected
