"""`sailmesh exec` and `sailmesh get workloads` against a mesh state file (no processes): which instance a
kubectl-style target names, the environment the command runs with, and the listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.cli.main import main
from sailmesh.platform.state import InstanceRecord, MeshState
from sailmesh.platform.workloads import Instance, PortDecl, app_env, instance_record


def _inst(name: str, ns: str, ip: str, sidecar: bool, ports: tuple[PortDecl, ...] = ()) -> Instance:
    return Instance(name=f"{name}-0", workload=name, namespace=ns, ip=ip, labels={"app": name},
                    service_account=name, command=("true",), env={"FROM_SPEC": "1"}, ports=ports,
                    app_ports={p.container_port: 41000 if sidecar else p.container_port for p in ports},
                    sidecar=sidecar)


INSTANCES = [
    _inst("httpbin", "foo", "127.0.9.2", True, (PortDecl(8080, "http"),)),
    _inst("sleep", "foo", "127.0.9.3", True),
    _inst("httpbin", "legacy", "127.0.9.4", False, (PortDecl(8080, "http"),)),
    _inst("sleep", "legacy", "127.0.9.5", False),
]


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    MeshState(supervisor_pid=os.getpid(), api_url="http://127.0.0.1:1", xds_address="127.0.0.1:2",
              instances=[instance_record(i, 15001) for i in INSTANCES]).save(str(tmp_path))
    return str(tmp_path)


def test_every_instance_gets_a_proxy_on_its_own_address() -> None:
    """With a sidecar it is Envoy's virtualOutbound; without one, the platform's plain forwarder (same port)."""
    for inst in INSTANCES:
        env = app_env(inst, 15001)
        assert env["http_proxy"] == env["HTTP_PROXY"] == f"http://{inst.ip}:15001"
        assert env["no_proxy"] == "" and env["POD_NAMESPACE"] == inst.namespace
        assert env["SERVICE_ACCOUNT"] == inst.service_account and env["FROM_SPEC"] == "1"


def test_state_file_round_trips_instances(state_dir: str) -> None:
    loaded = MeshState.load(state_dir)
    assert [i.name for i in loaded.instances] == ["httpbin-0", "sleep-0", "httpbin-0", "sleep-0"]
    assert loaded.instances[0].ports == [{"name": "http", "containerPort": 8080, "protocol": "HTTP",
                                          "appPort": 41000}]
    assert [i.sidecar for i in loaded.instances] == [True, True, False, False]


@pytest.mark.parametrize(("target", "ns", "expected"), [
    ("sleep", "foo", "127.0.9.3"),
    ("deploy/sleep", "foo", "127.0.9.3"),
    ("pod/sleep-0", "legacy", "127.0.9.5"),
    ("sleep-0", "legacy", "127.0.9.5"),
    ("sleep", "bar", None),
    ("nope", "foo", None),
])
def test_exec_target_is_the_workload_or_the_instance(state_dir: str, target: str, ns: str,
                                                     expected: str | None) -> None:
    found = find_instance(MeshState.load(state_dir), target, ns)
    assert (found.address if found else None) == expected


def _sailmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sailmesh", *args], capture_output=True, text=True, timeout=60)


def test_exec_runs_the_command_with_the_workloads_environment(state_dir: str) -> None:
    """Everything after `--` is the command, its own options included (python's -c is not sailmesh's -c)."""
    code = "import os; print(os.environ['http_proxy'], os.environ['POD_NAMESPACE'], os.environ['SERVICE_ACCOUNT'])"
    r = _sailmesh("exec", "sleep", "-n", "legacy", "-c", "sleep", "--state-dir", state_dir, "--",
                  sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["http://127.0.9.5:15001", "legacy", "sleep"]
    r = _sailmesh("exec", "sleep", "-n", "foo", "--state-dir", state_dir, "--", sys.executable, "-c",
                  "import sys; sys.exit(7)")
    assert r.returncode == 7  # the command's exit code, as kubectl exec reports it


def test_exec_errors(state_dir: str) -> None:
    r = _sailmesh("exec", "nope", "-n", "foo", "--state-dir", state_dir, "--", "true")
    assert r.returncode == 1 and 'workload "nope" not found in namespace "foo"' in r.stderr
    r = _sailmesh("exec", "sleep", "-n", "foo", "--state-dir", state_dir, "--", "no-such-command-here")
    assert r.returncode == 127
    assert main(["exec", "sleep", "-n", "foo", "--state-dir", state_dir]) == 1  # no command
    assert main(["exec", "sleep", "-n", "foo", "-c", "istio-proxy", "--state-dir", state_dir, "--", "true"]) == 1


def test_exec_needs_a_running_mesh(tmp_path: Path) -> None:
    assert main(["exec", "sleep", "-n", "foo", "--state-dir", str(tmp_path), "--", "true"]) == 1


def test_get_workloads_json_and_table(state_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "workloads", "-A", "-o", "json", "--state-dir", state_dir]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [(i["namespace"], i["name"], i["sidecar"]) for i in items] == [
        ("foo", "httpbin-0", True), ("foo", "sleep-0", True), ("legacy", "httpbin-0", False),
        ("legacy", "sleep-0", False)]
    assert items[0] == {"namespace": "foo", "name": "httpbin-0", "workload": "httpbin", "labels": {"app": "httpbin"},
                        "address": "127.0.9.2", "ports": [{"name": "http", "containerPort": 8080,
                                                           "protocol": "HTTP", "appPort": 41000}],
                        "serviceAccount": "httpbin", "sidecar": True}
    assert "env" not in items[0]
    assert main(["get", "workloads", "-n", "legacy", "--state-dir", state_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "PORTS", "SERVICE", "ACCOUNT", "SIDECAR", "LABELS"]
    assert lines[1].split() == ["httpbin-0", "127.0.9.4", "8080/HTTP", "httpbin", "false", "app=httpbin"]
    assert lines[2].split() == ["sleep-0", "127.0.9.5", "<none>", "sleep", "false", "app=sleep"]
    assert main(["get", "workloads", "-n", "bar", "--state-dir", state_dir]) == 0
    assert "No resources found in bar namespace." in capsys.readouterr().out


def test_get_workloads_by_name(state_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "wl", "sleep", "-A", "-o", "json", "--state-dir", state_dir]) == 0
    assert [i["address"] for i in json.loads(capsys.readouterr().out)] == ["127.0.9.3", "127.0.9.5"]


def test_instance_record_keeps_what_exec_needs() -> None:
    rec: InstanceRecord = instance_record(INSTANCES[3], 15001)
    assert rec.env["HTTP_PROXY"] == "http://127.0.9.5:15001" and rec.sidecar is False
