"""CRDs deleted and installed while the control plane runs, against the real kube-apiserver (own cluster: the test
deletes one of Istio's CRDs): as istiod's informers follow CRDs, the VirtualService kind stops being watched when
its CRD is deleted (its objects leave the store, no list/watch keeps failing against the missing resource) and is
watched again at once when the CRD comes back (a VirtualService applied then reaches the store within seconds,
not after the informer's back-off)."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Iterator

import pytest
import yaml

from sailmesh.platform.kube import KubePlatform
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e import kube_support as ks

pytestmark = pytest.mark.e2e
VS_CRD = "virtualservices.networking.istio.io"
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  http: [{route: [{destination: {host: web.default.svc.cluster.local}}]}]
"""


@pytest.fixture(scope="module", name="kube")
def _kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    yield from ks.cluster_for(tmp_path_factory)


def _vs_crd() -> str:
    for doc in yaml.safe_load_all((ks.CRDS / "crd-all.gen.yaml").read_text()):
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == VS_CRD:
            return yaml.safe_dump(doc)
    raise AssertionError(f"{VS_CRD} is not in crd-all.gen.yaml")


def _watched(platform: KubePlatform) -> bool:
    return any(r.plural == "virtualservices" for r in platform.informers)


async def test_a_deleted_crd_stops_its_watch_and_a_reinstalled_one_starts_it_at_once(
        kube: KubeCluster, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    platform = KubePlatform(str(kube.kubeconfig))
    await platform.start(timeout_s=60)
    try:
        await ks.kubectl(kube, "apply", "-f", "-", input=VS % "before")

        async def stored(name: str) -> bool:
            return platform.store.get("VirtualService", "default", name) is not None

        await await_for(lambda: stored("before"), timeout=30, what="the VirtualService in the store")
        crd = _vs_crd()
        await ks.kubectl(kube, "delete", "crd", VS_CRD, "--wait=true")

        async def unwatched() -> bool:
            return not _watched(platform) and not platform.store.list("VirtualService")

        await await_for(unwatched, timeout=30, what="the VirtualService kind unwatched and its objects gone")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sailmesh.platform.kube.informer"):
            await asyncio.sleep(5)  # a kept informer would fail its list (404) and retry meanwhile
            failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("virtualservices:")]
        assert not failures, failures
        await ks.kubectl(kube, "create", "-f", "-", input=crd)
        await ks.kubectl(kube, "wait", "--for=condition=Established", f"crd/{VS_CRD}", "--timeout=60s")
        await ks.kubectl(kube, "apply", "-f", "-", input=VS % "after")
        # the CRD informer's event starts the watch (nothing re-discovers kinds periodically, so a missed event would
        # never bring it): 30 s is for a busy machine, not for a slower mechanism
        await await_for(lambda: stored("after"), timeout=30, what="the VirtualService applied after the CRD came back")
        assert _watched(platform)
    finally:
        await platform.stop()
