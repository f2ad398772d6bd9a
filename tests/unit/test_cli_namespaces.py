"""kubectl's namespace and pod habits on the embedded mesh (issue 11): `get ns` / `describe ns NAME` list the
namespaces of the mesh's config, workloads and proxies, `get pod NAME -o json` is a v1 Pod and `get pods -o json`
a v1 List, and `analyze -f missing.yaml` is an error naming the file even when the live mesh has findings."""

from __future__ import annotations

import json
import os
import pathlib

from sailmesh.platform.ready import write as write_controlplane_record
from sailmesh.platform.state import InstanceRecord, MeshState
from sailmesh.processes import proc_start_time
from tests.unit.test_cli_live_more import _cli, mesh  # noqa: F401  (the fixture: a control plane + its state)

CONFIG = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: viewer, namespace: foo, labels: {team: a}}
spec: {selector: {matchLabels: {app: httpbin}}, action: ALLOW, rules: [{to: [{operation: {methods: [GET]}}]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: foo}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
"""


def _with_instances(state: str, to: pathlib.Path) -> str:
    saved = MeshState.load(state)
    saved.supervisor_start_time = proc_start_time(os.getpid())  # the mesh's age: its namespaces' without objects
    saved.instances = [
        InstanceRecord("httpbin-0", "httpbin", "foo", "127.0.1.1", {"app": "httpbin"}, "httpbin",
                       [{"name": "http", "containerPort": 8000, "protocol": "HTTP", "appPort": 40000}]),
        InstanceRecord("sleep-0", "sleep", "legacy", "127.0.1.2", {"app": "sleep"}, "sleep", sidecar=False)]
    saved.save(str(to))
    return str(to)


async def _applied(state: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """CONFIG applied to the mesh; its file."""
    f = tmp_path / "config.yaml"
    f.write_text(CONFIG)
    rc, _, err = await _cli("apply", "-f", str(f), "--state-dir", state)
    assert rc == 0, err
    return f


async def test_namespaces_of_the_embedded_mesh_listed_and_described(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, state = mesh
    await _applied(state, tmp_path)
    state = _with_instances(state, tmp_path / "with-pods")
    rc, out, err = await _cli("get", "ns", "--state-dir", state)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "AGE"], out  # kubectl's columns
    assert [r[0] for r in rows[1:]] == ["default", "foo", "istio-system", "legacy"], out  # config and pods
    assert all(r[1] == "Active" and r[2] != "<unknown>" for r in rows[1:]), out
    # Istio's docs: `kubectl get namespace -L istio-injection`
    rc, out, _ = await _cli("get", "namespaces", "-L", "istio-injection", "--state-dir", state)
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE", "ISTIO-INJECTION"], out
    one = json.loads((await _cli("get", "ns", "foo", "-o", "json", "--state-dir", state))[1])
    assert (one["apiVersion"], one["kind"], one["metadata"]["name"], one["status"]["phase"]) == \
        ("v1", "Namespace", "foo", "Active"), one
    listed = json.loads((await _cli("get", "ns", "-o", "json", "--state-dir", state))[1])
    assert listed["kind"] == "List" and [n["kind"] for n in listed["items"]] == ["Namespace"] * 4, listed
    rc, _, err = await _cli("get", "ns", "nope", "--state-dir", state)
    assert rc == 1 and 'namespaces "nope" not found' in err, err

    rc, out, err = await _cli("describe", "ns", "foo", "--state-dir", state)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["Name:        foo", "Labels:      <none>", "Annotations: <none>", "Status:      Active"], out
    assert "  mTLS (PeerAuthentication): STRICT, mesh-wide from PeerAuthentication istio-system/default" in lines
    assert "  Sidecar: foo/default (the namespace's default)" in lines, out
    assert "    foo/viewer: ALLOW, workloads app=httpbin" in lines, out
    assert any(line.startswith("  httpbin-0  127.0.1.1  sidecar: yes  service account: httpbin") for line in lines)
    assert "Config:      1 AuthorizationPolicy, 1 Sidecar" in lines, out
    rc, out, _ = await _cli("describe", "namespace", "default", "--state-dir", state)
    assert "  mTLS (PeerAuthentication): STRICT, mesh-wide from PeerAuthentication istio-system/default" in out
    assert "Config:      1 VirtualService" in out.splitlines(), out
    rc, _, err = await _cli("describe", "ns", "nope", "--state-dir", state)
    assert rc == 1 and 'namespaces "nope" not found; there: default, foo, istio-system, legacy' in err, err


async def test_get_pod_json_is_a_v1_pod_and_pods_a_v1_list(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, state = mesh
    state = _with_instances(state, tmp_path / "with-pods")
    rc, out, err = await _cli("get", "pod", "httpbin-0", "-n", "foo", "-o", "json", "--state-dir", state)
    assert rc == 0, err
    pod = json.loads(out)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod"), pod
    assert pod["metadata"]["name"] == "httpbin-0" and pod["metadata"]["namespace"] == "foo"
    assert pod["metadata"]["labels"] == {"app": "httpbin"}
    assert pod["status"]["podIP"] == "127.0.1.1" and pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == "httpbin"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["httpbin", "istio-proxy"]  # with its sidecar
    assert pod["spec"]["containers"][0]["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    rc, out, _ = await _cli("get", "pods", "-A", "-o", "json", "--state-dir", state)
    listed = json.loads(out)
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List"), listed
    assert [(p["kind"], p["metadata"]["name"]) for p in listed["items"]] == [("Pod", "httpbin-0"), ("Pod", "sleep-0")]
    legacy = listed["items"][1]
    assert [c["name"] for c in legacy["spec"]["containers"]] == ["sleep"]  # no sidecar
    assert legacy["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    rc, out, _ = await _cli("get", "pods", "-n", "legacy", "-o", "yaml", "--state-dir", state)
    assert out.startswith("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n"), out
    rc, _, err = await _cli("get", "pod", "nope", "-o", "json", "--state-dir", state)
    assert rc == 1 and 'pods "nope" not found' in err, err


async def test_analyze_missing_file_is_an_error_despite_live_findings(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # istioctl's gatherFiles returns the stat error before any analysis: exit 1 (ExitUnknownError), not 79
    # (ExitAnalyzerFoundIssues) nor 65 (ExitDataError, for files read but not parsed)
    _, state = mesh
    f = await _applied(state, tmp_path)
    rc, out, _ = await _cli("analyze", "--state-dir", state)
    assert rc == 79, out  # the live mesh has findings (a subset no rule defines), named as istioctl names them
    assert "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not " \
           'found: "reviews+v2"' in out.splitlines(), out
    missing = tmp_path / "missing.yaml"
    rc, out, err = await _cli("analyze", "-f", str(missing), "--state-dir", state)
    assert (rc, out) == (1, ""), (rc, out)
    assert err.strip() == f"Error: {missing}: no such file or directory", err
    rc, out, err = await _cli("analyze", "-f", str(f), "-f", str(missing), "--state-dir", state)
    assert (rc, out) == (1, "") and str(missing) in err, (rc, out, err)


async def test_commands_find_a_standalone_control_plane_by_its_record(mesh, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # `sailmesh controlplane` (no `up`/`demo`, e.g. with --kubeconfig) records its API URL in its state dir; the
    # commands find it there (--state-dir CP_STATE), or under controlplane/ of the default state dir
    cp, state = mesh
    cp_state = tmp_path / "sm" / "controlplane"
    cp_state.mkdir(parents=True)
    (cp_state / "api-token").write_text(cp.identity.api_token_path.read_text())
    write_controlplane_record(str(cp_state), MeshState.load(state).api_url)
    await _applied(state, tmp_path)
    for where in (cp_state, cp_state.parent):
        rc, out, err = await _cli("get", "vs", "-A", "--state-dir", str(where))
        assert rc == 0 and "reviews" in out, (where, out, err)
    (cp_state / "controlplane.json").write_text('{"apiUrl": "http://127.0.0.1:1", "pid": 999999999}')
    rc, _, err = await _cli("get", "vs", "--state-dir", str(cp_state))  # its process is gone: nothing runs there
    assert rc == 1 and "no running mesh found" in err and "sailmesh controlplane" in err, err
