"""The operating commands against a control plane on Kubernetes (issue 11: "every command works against the
embedded mesh and Kubernetes").

`sailmesh controlplane --kubeconfig` runs as its own process beside the real kube-apiserver (as a user runs it;
it records its API URL in its state dir), the test node runs two injected pods (test_kube_injected_pods' shape:
native sidecar, projected token, the agent) and Istio config is applied with kubectl. Each read-only command is
then a fresh `python -m sailmesh ... --state-dir CP_STATE` process, and its output is checked against what the
cluster holds: `version`, `get` (vs, dr, ns, pods, `-o json`), `analyze` (a VirtualService naming a subset no
DestinationRule defines: IST0101, exit 79 as istioctl), `proxy-status`, `proxy-config cluster`, `describe`
(a VirtualService, a pod, a namespace) and `x describe service`.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest

from sailmesh.processes import free_port
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_pod import ControlPlaneAddresses
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.e2e.kube_support import kubectl, module_cluster, running_node, short_dir, wait_service_account
from tests.e2e.test_kube_bookinfo import replica_process
from tests.e2e.test_kube_controlplane_wait import ready
from tests.e2e.test_kube_injected_pods import APPS as INJECTED_APPS
from tests.e2e.test_kube_injected_pods import NS as INJECTED_NS

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(module_cluster)
NS = "kt-cli"


# test_kube_injected_pods' httpbin and sleep (service accounts, Service, hand-injected pods) in this namespace
APPS = INJECTED_APPS.replace(f"namespace: {INJECTED_NS}", f"namespace: {NS}")

# a subset the DestinationRule does not define: IST0101 for analyze, a warning for describe
CONFIG = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin, namespace: {NS}}}
spec:
  host: httpbin
  subsets: [{{name: v1, labels: {{app: httpbin}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: {NS}}}
spec:
  hosts: [httpbin]
  http: [{{route: [{{destination: {{host: httpbin, subset: v2}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NS}}}
spec: {{mtls: {{mode: STRICT}}}}
"""


async def sailmesh(state: pathlib.Path, *args: str) -> tuple[int, str, str]:
    """One CLI command in its own process against the control plane whose state dir is `state`."""
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "sailmesh", *args, "--state-dir", str(state)],
                                   capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.timeout(900)  # a cluster start plus a control plane and two meshed pods on a loaded 2-core machine
async def test_read_only_commands_against_a_kubernetes_control_plane(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    block = random_loopback_block()  # loopback pod addresses: the agents' admin interfaces answer loopback only
    for ns in ("istio-system", NS):
        await kubectl(kube, "create", "namespace", ns, check=False)
    await kubectl(kube, "label", "namespace", NS, "istio-injection=enabled")
    await kubectl(kube, "create", "namespace", "cli-quiet", check=False)  # no workload, config or proxy in it
    await kubectl(kube, "label", "namespace", "cli-quiet", "team=payments")
    await wait_service_account(kube, NS)
    # `sailmesh controlplane --kubeconfig` as its own process, every port free (test_kube_bookinfo's replica)
    with replica_process(kube, tmp_path, free_port()) as cp, short_dir("kc-") as short:
        try:
            async with asyncio.timeout(420):  # a hang fails with the awaiting frame in its traceback
                await await_for(lambda: asyncio.to_thread(ready, cp.http), timeout=180, interval=0.5,
                                what="the control plane ready")
                async with running_node(kube, "node-cli", block, short) as node:
                    node.control_plane = ControlPlaneAddresses(f"127.0.0.1:{cp.xds}", f"127.0.0.1:{cp.ca}")
                    await kubectl(kube, "apply", "-f", "-", input=APPS + "---" + CONFIG)
                    # the pods' addresses once they run (CI once read them right after the apply)
                    await commands(kube, cp.state, lambda: {k[1]: r.ip for k, r in node.pods.items()})
        except BaseException:
            print(cp.log.read_text(errors="replace")[-6000:])
            raise


async def commands(kube: KubeCluster, state: pathlib.Path, pod_ips: Callable[[], dict[str, str]]) -> None:
    async def synced() -> str | None:
        rc, out, _ = await sailmesh(state, "proxy-status")
        rows = [line.split() for line in out.splitlines()[1:]]
        ours = [r for r in rows if r and r[0].endswith(f".{NS}")]
        return out if rc == 0 and len(ours) == 2 and all(r[2:6] == ["SYNCED"] * 4 for r in ours) else None

    out = await await_for(synced, timeout=240, interval=1.0, what="both injected pods' proxies SYNCED")
    ips = pod_ips()  # both pods run: their proxies are connected
    assert out.splitlines()[0].split()[:2] == ["NAME", "TYPE"], out
    assert {r.split()[0] for r in out.splitlines()[1:]} >= {f"httpbin-1.{NS}", f"sleep-1.{NS}"}, out

    rc, out, err = await sailmesh(state, "version")
    assert rc == 0, err
    assert out.splitlines()[:2] == ["client version: 0.1.0", "control plane version: 0.1.0"], out

    rc, out, err = await sailmesh(state, "get", "vs", "-n", NS)
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "AGE"], out
    assert out.splitlines()[1].split()[:2] == [NS, "httpbin"] and '["httpbin"]' in out, out
    rc, out, err = await sailmesh(state, "get", "dr", "httpbin", "-n", NS, "-o", "json")
    assert rc == 0 and json.loads(out)["spec"]["subsets"] == [{"name": "v1", "labels": {"app": "httpbin"}}], out
    rc, _, err = await sailmesh(state, "get", "vs", "nope", "-n", NS)
    assert rc == 1 and 'VirtualService "nope" not found' in err, err

    rc, out, err = await sailmesh(state, "get", "ns", "-L", "istio-injection")
    assert rc == 0, err
    rows = {r.split()[0]: r.split() for r in out.splitlines()[1:]}
    assert rows[NS][1] == "Active" and rows[NS][-1] == "enabled", out  # the Namespace's own label
    # on Kubernetes the API server's Namespaces are listed as they are, not inferred from workloads: one with
    # nothing of the mesh in it is there, with its own labels
    rc, out, err = await sailmesh(state, "get", "ns", "-L", "team")
    assert rc == 0, err
    rows = {r.split()[0]: r.split() for r in out.splitlines()[1:]}
    assert rows["cli-quiet"][-1] == "payments" and "kube-system" in rows, out

    rc, out, err = await sailmesh(state, "get", "pods", "-n", NS)
    assert rc == 0, err
    rows = {r.split()[0]: r.split() for r in out.splitlines()[1:]}
    assert set(rows) == {"httpbin-1", "sleep-1"}, out
    assert rows["httpbin-1"][1] == ips["httpbin-1"] and rows["httpbin-1"][3] == "true", out  # with its sidecar
    rc, out, err = await sailmesh(state, "get", "pod", "httpbin-1", "-n", NS, "-o", "json")
    assert rc == 0, err
    p = json.loads(out)
    assert (p["apiVersion"], p["kind"], p["metadata"]["name"], p["status"]["podIP"]) == \
        ("v1", "Pod", "httpbin-1", ips["httpbin-1"]), p
    assert p["spec"]["serviceAccountName"] == "httpbin" and "istio-proxy" in [
        c["name"] for c in p["spec"]["containers"]], p

    rc, out, err = await sailmesh(state, "analyze", "-n", NS)
    assert rc == 79, (rc, out, err)  # istioctl's ExitAnalyzerFoundIssues
    # istioctl's line for a cluster's resource: no file:line after its name
    assert any(line.startswith(f"Error [IST0101] (VirtualService {NS}/httpbin) ") and '"httpbin+v2"' in line
               for line in out.splitlines()), out

    rc, out, err = await sailmesh(state, "proxy-config", "cluster", f"sleep-1.{NS}", "--fqdn",
                                  f"httpbin.{NS}.svc.cluster.local")
    assert rc == 0, err
    rows = [r.split() for r in out.splitlines()[1:]]
    assert {tuple(r[1:4]) for r in rows} >= {("8000", "-", "outbound"), ("8000", "v1", "outbound")}, out

    rc, out, err = await sailmesh(state, "describe", "vs", "httpbin", "-n", NS)
    assert rc == 0 and any("IST0101" in line for line in out.splitlines()[out.splitlines().index("Analysis:"):]), out
    rc, out, err = await sailmesh(state, "x", "describe", "service", "httpbin", "-n", NS)
    assert rc == 0, err
    assert f"VirtualService: httpbin.{NS}" in out and "subset v2" in out, out
    rc, out, err = await sailmesh(state, "describe", "pod", "httpbin-1", "-n", NS)
    assert rc == 0 and f"STRICT, from PeerAuthentication {NS}/default" in out, (out, err)
    rc, out, err = await sailmesh(state, "describe", "ns", NS)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Name:        {NS}" and "Labels:      istio-injection=enabled" in lines, out
    assert f"  mTLS (PeerAuthentication): STRICT, from PeerAuthentication {NS}/default" in lines, out
    assert any(line.startswith(f"  httpbin-1  {ips['httpbin-1']}  sidecar: yes") for line in lines), out
