"""kubectl/istioctl habits against a live control plane (issue 11): analyze the running mesh, apply warnings,
dry runs, `apply -f -`, `delete KIND NAME`.

In-process control plane with its real HTTP API on loopback; the CLI runs in a thread, as a user's command would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import pathlib
import sys

import pytest

from sailmesh import settings as settings_mod
from sailmesh.cli.main import main
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.controlplane.live import live_documents
from sailmesh.platform.state import MeshState
from sailmesh.processes import free_port
from sailmesh.registry.model import Workload
from sailmesh.testing.waiting import await_for

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"""
VS_V2 = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def test_workloads_become_pods_and_namespaces() -> None:
    with_proxy = Workload("reviews-v1-0", "default", "127.0.1.1", {"app": "reviews"}, service_account="reviews")
    without = Workload("httpbin-0", "legacy", "127.0.1.2", {"app": "httpbin"})
    docs = live_documents([], [with_proxy, without], {"127.0.1.1"})
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"}
    names = [c["name"] for c in pods["reviews-v1-0"]["spec"]["containers"]]
    assert names == ["reviews", "istio-proxy"] and pods["reviews-v1-0"]["spec"]["serviceAccountName"] == "reviews"
    assert [c["name"] for c in pods["httpbin-0"]["spec"]["containers"]] == ["httpbin"]
    # a workload without a sidecar is one the user chose to run outside the mesh: Istio's opt-out annotation
    assert pods["httpbin-0"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    labels = {d["metadata"]["name"]: d["metadata"]["labels"] for d in docs if d["kind"] == "Namespace"}
    assert labels == {"default": {"istio-injection": "enabled"}, "legacy": {"istio-injection": "disabled"}}


def test_the_platforms_namespaces_are_shown_as_they_are() -> None:
    # Kubernetes: a Namespace's labels are its own (kubectl label), not inferred from whether its pods have sidecars
    w = Workload("reviews-v1-0", "default", "127.0.1.1", {"app": "reviews"})
    kube_ns = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"team": "a"}},
                "status": {"phase": "Active"}},
               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quiet"}}]
    docs = live_documents([], [w], {"127.0.1.1"}, kube_ns)
    ns = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    assert set(ns) == {"default", "quiet"}
    assert ns["default"]["metadata"]["labels"] == {"team": "a"} and ns["default"]["status"] == {"phase": "Active"}


async def _cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    def run() -> tuple[int, str, str]:
        out, err, old = io.StringIO(), io.StringIO(), (sys.stdout, sys.stderr, sys.stdin)
        sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO(stdin)
        try:
            return main(list(argv)), out.getvalue(), err.getvalue()
        finally:
            sys.stdout, sys.stderr, sys.stdin = old
    return await asyncio.to_thread(run)


@pytest.fixture
async def mesh(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    config.mkdir()
    (config / "reviews.yaml").write_text(SERVICE)
    opts = ControlPlaneOptions(config_dirs=[str(config)], xds_port=0, http_port=free_port(), xds_tls_port=0,
                               ca_port=0, state_dir=str(tmp_path / "cp"))
    cp = ControlPlane(opts, settings_mod.load())
    await cp.start()
    for version in ("v1", "v2"):
        cp.registry.register(Workload(f"reviews-{version}-0", "default", f"127.0.1.{len(version)}",
                                      {"app": "reviews", "version": version}))
    MeshState(supervisor_pid=0, api_url=f"http://127.0.0.1:{opts.http_port}",
              xds_address=f"127.0.0.1:{opts.xds_tls_port}",
              api_token_file=str(cp.identity.api_token_path)).save(str(tmp_path))  # the CLI proves itself with it
    try:
        yield cp, str(tmp_path)
    finally:
        await cp.stop()


async def test_apply_warns_analyze_sees_the_live_mesh_and_dry_runs_change_nothing(mesh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cp, state = mesh
    await await_for(lambda: asyncio.sleep(0, len(cp.snapshot.workloads) == 2), what="workloads in the snapshot")
    # A subset no DestinationRule defines: applied (as Istio's webhook admits it), with IST0101 printed.
    rc, out, err = await _cli("apply", "-f", "-", "--state-dir", state, stdin=VS_V2)
    assert rc == 0 and "VirtualService default/reviews created" in out
    assert "Warning: Error [IST0101]" in err
    assert 'Referenced host+subset in destinationrule not found: "reviews+v2"' in err
    # analyze with no -f looks at the running mesh
    rc, out, _ = await _cli("analyze", "--state-dir", state)
    assert rc == 79 and "IST0101" in out
    # a dry run of the DestinationRule: said, analyzed, not applied
    dr = tmp_path / "dr.yaml"
    dr.write_text(DR)
    rc, out, err = await _cli("apply", "-f", str(dr), "--dry-run=server", "--state-dir", state)
    assert rc == 0 and out.strip() == "DestinationRule default/reviews created (dry run)" and "IST0101" not in err
    assert cp.store.get("DestinationRule", "default", "reviews") is None
    # -f files are analyzed together with the live mesh: the DR fixes the VS's reference, and the workloads
    # count as pods, so its subsets select something (no IST0173)
    rc, out, err = await _cli("analyze", "-f", str(dr), "-o", "json", "--state-dir", state)
    codes = {m["code"] for m in json.loads(out)}
    assert "IST0101" not in codes and "IST0173" not in codes, out
    # --use-live=false: the file alone
    rc, out, _ = await _cli("analyze", "-f", str(dr), "--use-live=false", "--state-dir", state)
    assert rc == 0


async def test_delete_by_kind_and_name(mesh) -> None:  # type: ignore[no-untyped-def]
    cp, state = mesh
    rc, _, _ = await _cli("apply", "-f", "-", "--state-dir", state, stdin=VS_V2)
    assert rc == 0
    rc, out, err = await _cli("delete", "virtualservices", "nope", "--state-dir", state)
    assert rc == 1 and "VirtualService default/nope not found (existing: default/reviews)" in err
    rc, out, _ = await _cli("delete", "vs", "reviews", "--dry-run=server", "--state-dir", state)
    assert rc == 0 and "deleted (dry run)" in out and cp.store.get("VirtualService", "default", "reviews") is not None
    rc, out, _ = await _cli("delete", "vs", "reviews", "--state-dir", state)
    assert rc == 0 and out.strip() == "VirtualService default/reviews deleted"
    assert cp.store.get("VirtualService", "default", "reviews") is None
    rc, _, err = await _cli("delete", "frobnicator", "x", "--state-dir", state)
    assert rc == 1 and "unknown kind" in err and "VirtualService" in err
    # the Service lives in the watched directory: deleting it there is the way
    rc, out, _ = await _cli("delete", "svc", "reviews", "--state-dir", state)
    assert "is defined in the watched directory" in out


PA_AND_DR_V3 = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v3, labels: {version: v3}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-v1, namespace: default}
spec: {selector: {matchLabels: {version: v1}}, mtls: {mode: PERMISSIVE}}
"""


async def test_describe_service_and_workload(mesh) -> None:  # type: ignore[no-untyped-def]
    cp, state = mesh
    await await_for(lambda: asyncio.sleep(0, len(cp.snapshot.workloads) == 2), what="workloads in the snapshot")
    rc, _, _ = await _cli("apply", "-f", "-", "--state-dir", state, stdin=VS_V2 + "---\n" + PA_AND_DR_V3)
    assert rc == 0
    rc, out, _ = await _cli("x", "describe", "service", "reviews", "--state-dir", state)
    assert rc == 0, out
    assert "Pods: reviews-v1-0, reviews-v2-0" in out
    assert "Port: http 9080/HTTP targets pod port 9080" in out  # Istio's protocol from the port name
    assert "Subset v1 (version=v1): reviews-v1-0" in out and "Subset v3 (version=v3): no pods" in out
    assert "VirtualService: reviews.default (gateways: mesh)" in out and "http -> reviews subset v2" in out
    # warnings where config conflicts: the VS's subset v2 is not defined, subset v3 selects nothing
    assert "Warning: VirtualService reviews.default routes to subset v2, which no DestinationRule defines" in out
    assert "Warning: subset v3 of DestinationRule reviews.default selects no pods" in out
    # the analyzers' messages, from the control plane (computed there once per live mesh)
    assert "Analysis: Error [IST0101] (VirtualService default/reviews" in out and '"reviews+v2"' in out, out
    # Istio's PeerAuthentication precedence: the workload's own policy beats the namespace's
    assert "mTLS (PeerAuthentication) for reviews-v1-0: PERMISSIVE, from PeerAuthentication default/reviews-v1" in out
    rc, out, _ = await _cli("x", "describe", "workload", "reviews-v2-0", "--state-dir", state)
    assert rc == 0 and "mTLS (PeerAuthentication): STRICT, from PeerAuthentication default/default" in out
    assert "Sidecar: no" in out and "Service: reviews.default" in out
    rc, _, err = await _cli("x", "describe", "service", "nope", "--state-dir", state)
    assert rc == 1 and "services there: reviews" in err


async def test_flags_and_version(mesh) -> None:  # type: ignore[no-untyped-def]
    _, state = mesh
    rc, out, _ = await _cli("x", "flags", "UO")
    assert rc == 0 and out.startswith("UO: upstream overflow") and "connectionPool" in out
    rc, out, _ = await _cli("x", "flags", "UF,URX")
    assert rc == 0 and "UF: upstream connection failure" in out and "URX: retries exhausted" in out
    rc, out, _ = await _cli("x", "flags", "ZZ")
    assert rc == 1 and "not a response flag" in out
    rc, out, _ = await _cli("version", "-o", "json", "--state-dir", state)
    info = json.loads(out)
    assert rc == 0 and info["client"] == info["controlplane"] and info["envoy"].count(".") == 2, info


ENVOY_FILTER = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: default}
spec: {configPatches: [{applyTo: BOOTSTRAP, patch: {operation: MERGE, value: {}}}]}
"""


async def test_accepted_not_enforced_is_said_by_apply_analyze_and_get(mesh) -> None:  # type: ignore[no-untyped-def]
    _, state = mesh
    note = ("EnvoyFilter default/lua: accepted, not enforced: spec.configPatches[0].applyTo: BOOTSTRAP (ignored, as "
            "Istio ignores it)")
    rc, out, err = await _cli("apply", "-f", "-", "--state-dir", state, stdin=ENVOY_FILTER)
    assert rc == 0 and "EnvoyFilter default/lua created" in out and f"Warning: {note}" in err
    rc, _, err = await _cli("analyze", "--state-dir", state)
    assert f"Note: {note}" in err
    rc, out, err = await _cli("get", "envoyfilter", "--state-dir", state)
    assert rc == 0 and "lua" in out and f"Note: {note}" in err
    # the note comes from the control plane (so `get` imports no generator code to say it)
    from sailmesh.cli.apiclient import call

    live = MeshState.load(state)
    status, body = await asyncio.to_thread(call, live.api_url, "GET", "/api/v1/resources?kind=EnvoyFilter",
                                           token=live.api_token())
    assert status == 200 and body["notes"] == [note], body


def test_kubectl_columns_age_and_label_selectors() -> None:
    from sailmesh.cli.get import age, selector_matches, table_rows

    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert [age(t, now) for t in ("2026-01-01T23:59:15Z", "2026-01-01T23:48:00Z", "2026-01-01T19:00:00Z",
                                  "2025-12-29T00:00:00Z", "garbage")] == ["45s", "12m", "5h", "4d", "<unknown>"]
    labels = {"app": "reviews", "version": "v1"}
    assert selector_matches("app=reviews,version!=v2", labels) and selector_matches("app", labels)
    assert not selector_matches("app=ratings", labels) and not selector_matches("!version", labels)
    vs = {"kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default",
                                                 "creationTimestamp": "2026-01-01T23:00:00Z"},
          "spec": {"hosts": ["reviews"], "gateways": ["bookinfo-gateway"]}}
    rows = table_rows([vs], "VirtualService", wide=False)
    # Istio's VirtualService printer columns (its CRD's additionalPrinterColumns): Gateways, Hosts, Age
    assert rows[0] == ("NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "AGE")
    assert rows[1][:4] == ("default", "reviews", '["bookinfo-gateway"]', '["reviews"]')
    svc = {"kind": "Service", "metadata": {"name": "r", "namespace": "default"},
           "spec": {"selector": {"app": "r"}, "ports": [{"port": 9080}]}}
    assert table_rows([svc], "Service", wide=True)[1][2:4] == ("9080/TCP", "app=r")


def test_verify_install_compares_serials_as_numbers() -> None:
    """Envoy's /certs prints a serial as whole bytes: a root whose top nibble is 0 shows a leading zero there
    (CI caught verify-install calling such a mesh's certificates foreign)."""
    from sailmesh.cli.verify_install import same_serial

    assert same_serial("07ed744e5a", "7ed744e5a") and same_serial("ab", "AB")
    assert not same_serial("07ed744e5b", "7ed744e5a") and not same_serial(None, "7e") and not same_serial("zz", "7e")


BAD_TIMEOUT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    timeout: 5x
"""


async def test_analyze_is_answered_by_the_control_plane(mesh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`analyze` (live, and -f files with the live mesh) is computed by the control plane: the CLI process loads
    neither the analyzers nor YAML nor Envoy's protos, and a file's errors still name file, line, resource, field."""
    from tests.unit.test_cli_startup import heavy, imported

    cp, state = mesh
    await await_for(lambda: asyncio.sleep(0, len(cp.snapshot.workloads) == 2), what="workloads in the snapshot")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_TIMEOUT)
    # (--use-live=false too: the files alone, analyzed by the running control plane: issue 11)
    for args in (("analyze",), ("analyze", "-f", str(bad)), ("analyze", "-A", "-o", "json"),
                 ("analyze", "-f", str(bad), "--use-live=false")):
        mods = await asyncio.to_thread(imported, *args, state_dir=state)
        assert "sailmesh.cli.analyze" in mods and not heavy(mods), (args, heavy(mods))
    rc, out, _ = await _cli("analyze", "-f", str(bad), "--use-live=false", "--state-dir", state)
    assert rc == 79 and f"(VirtualService default/ratings {bad}:8)" in out, out
    rc, out, err = await _cli("analyze", "-f", str(bad), "--state-dir", state)
    assert rc == 79, (out, err)
    # istioctl's IST0106 on the file's line of the field (line 8: `timeout: 5x`)
    assert f"Error [IST0106] (VirtualService default/ratings {bad}:8) Schema validation error: " \
           "spec.http[0].timeout" in out, out
    # suppressions, the namespace filter and a mesh config file travel with the question
    rc, out, _ = await _cli("analyze", "-f", str(bad), "-S", "IST0106=VirtualService ratings.default",
                            "--state-dir", state)
    assert rc == 0 and "IST0106" not in out, out
    rc, _, err = await _cli("analyze", "-S", "nonsense", "--state-dir", state)
    assert rc == 64 and "invalid suppression 'nonsense'" in err, err
    rc, out, _ = await _cli("analyze", "-f", str(bad), "-n", "other", "--state-dir", state)
    assert rc == 0 and "IST0106" not in out
    mesh_config = tmp_path / "mesh.yaml"
    mesh_config.write_text("[not, a, mapping]\n")
    rc, _, err = await _cli("analyze", "--meshConfigFile", str(mesh_config), "--state-dir", state)
    assert rc == 65 and f"cannot read mesh config {mesh_config}: mesh config must be a YAML mapping" in err, err
