"""Bookinfo on the real kube-apiserver end to end (issue 14): `sailmesh install --profile demo`, Istio's own
platform-kube/bookinfo.yaml applied with kubectl into a namespace labelled istio-injection=enabled (the real
deployment/replicaset controllers make the pods, the webhook injects them), the test node runs the injected pods
(each sidecar a `sailmesh agent` proving its identity with its projected token) and the ingress gateway, then
bookinfo-gateway.yaml: /productpage answers 200 through the gateway, and virtual-service-all-v1.yaml (with
destination-rule-all.yaml) pins reviews to v1 as in the embedded mesh.

The control plane runs as a process beside the cluster (the installed istiod Deployment is scaled to 0: the test
node cannot run an in-cluster control plane), on the webhook URL the install was given, as in
test_kube_admission.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_pod import ControlPlaneAddresses
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.conftest import CONFORMANCE
from tests.e2e import kube_support as ks

pytestmark = pytest.mark.e2e
BOOKINFO = CONFORMANCE / "bookinfo"
NS = "bookinfo"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    # no Istio CRDs file: `sailmesh install` applies its own
    yield from ks.cluster_for(tmp_path_factory, istio_crds=False, needs=BOOKINFO / "platform-kube" / "bookinfo.yaml")


@contextlib.contextmanager
def control_plane_process(kube: KubeCluster, workdir: pathlib.Path, webhook: int) -> Iterator[tuple[int, int, int]]:
    http, xds, ca = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(kube.kubeconfig), "--http-port",
           str(http), "--xds-tls-port", str(xds), "--ca-port", str(ca), "--webhook-port", str(webhook),
           "--state-dir", str(workdir / "cp-state"), "--leader-lease-seconds", "3"]
    with (workdir / "cp.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        yield http, xds, ca
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
        return resp.status == 200


def _patched(kube: KubeCluster) -> bool:
    m = json.loads(kube.kubectl("get", "mutatingwebhookconfiguration", "istio-sidecar-injector", "-o", "json").stdout)
    return all(h["clientConfig"].get("caBundle") for h in m["webhooks"])


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


def reviews_version(gateway: str) -> str:
    """v1 (no ratings), v2 (black stars) or v3 (red stars), from productpage's reviews API (as test_mesh_bookinfo)."""
    status, body = get(f"{gateway}/api/v1/products/0/reviews")
    assert status == 200, body
    rating = json.loads(body)["reviews"][0].get("rating")
    return "v1" if not rating else {"black": "v2", "red": "v3"}[rating["color"]]


async def pods_ready(kube: KubeCluster, namespace: str) -> list[str]:
    got = json.loads(await ks.kubectl(kube, "get", "pods", "-n", namespace, "-o", "json"))
    return [p["metadata"]["name"] for p in got["items"] if {c["type"]: c["status"] for c in p["status"].get(
        "conditions") or ()}.get("Ready") == "True"]


@pytest.mark.timeout(900)  # a cluster start plus several meshed processes on a loaded 2-core machine
async def test_bookinfo_installed_injected_and_routed_on_the_api_server(cluster: KubeCluster,
                                                                        tmp_path: pathlib.Path) -> None:
    kube = cluster
    webhook = free_port()
    install = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "sailmesh", "install", "--profile", "demo", "--kubeconfig", str(kube.kubeconfig),
        "--webhook-url", f"https://127.0.0.1:{webhook}"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    await ks.kubectl(kube, "scale", "deployment", "istiod", "-n", "istio-system", "--replicas=0")
    with control_plane_process(kube, tmp_path, webhook) as (http, xds, ca):
        await await_for(lambda: asyncio.to_thread(_ready, http), timeout=120, what="the control plane ready")
        await await_for(lambda: asyncio.to_thread(_patched, kube), timeout=60, interval=0.3,
                        what="the injector's CA bundle patched")
        with ks.short_dir("kb-") as short:  # SDS sockets: short Unix paths
            await run_bookinfo(kube, short, xds, ca)


async def run_bookinfo(kube: KubeCluster, short: pathlib.Path, xds: int, ca: int) -> None:
    async with ks.running_node(kube, "node-bookinfo", random_loopback_block(), short) as node:
        node.control_plane = ControlPlaneAddresses(f"127.0.0.1:{xds}", f"127.0.0.1:{ca}")
        await ks.kubectl(kube, "create", "namespace", NS)
        await ks.kubectl(kube, "label", "namespace", NS, "istio-injection=enabled")
        await ks.wait_service_account(kube, NS)
        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "platform-kube" / "bookinfo.yaml"))

        async def all_ready() -> bool:
            return len(await pods_ready(kube, NS)) == 6 and bool(await pods_ready(kube, "istio-system"))

        await await_for(all_ready, timeout=300, interval=1.0,
                        what="the six Bookinfo pods (injected) and the ingress gateway Ready")
        pods = json.loads(await ks.kubectl(kube, "get", "pods", "-n", NS, "-o", "json"))["items"]
        assert all(any(c["name"] == "istio-proxy" for c in p["spec"].get("initContainers") or ())
                   for p in pods), "every Bookinfo pod injected with the native sidecar"
        gateway_ip = next(r.ip for (ns, name), r in node.pods.items()
                          if ns == "istio-system" and name.startswith("istio-ingressgateway"))
        gateway = f"http://{gateway_ip}:8080"  # the gateway Service's port 80 -> targetPort 8080

        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "bookinfo-gateway.yaml"))
        _, body = await await_for(lambda: _ok(gateway + "/productpage"), timeout=120, interval=0.5,
                                  what="/productpage 200 through the ingress gateway")
        assert "Comedy of Errors" in body
        # without routing rules reviews is balanced over v1, v2, v3 (Istio's task text); then one file pins it
        before = collections.Counter([await asyncio.to_thread(reviews_version, gateway) for _ in range(15)])
        assert len(before) >= 2, before

        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "destination-rule-all.yaml"))
        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "virtual-service-all-v1.yaml"))

        async def all_v1() -> bool:
            seen = collections.Counter([await asyncio.to_thread(reviews_version, gateway) for _ in range(10)])
            return seen == {"v1": 10}

        await await_for(all_v1, timeout=60, interval=0.5, what="virtual-service-all-v1: reviews on v1 only")


async def _ok(url: str) -> tuple[int, str] | None:
    status, body = await asyncio.to_thread(get, url)
    return (status, body) if status == 200 else None
