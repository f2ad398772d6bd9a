"""The CRD informer's handler (platform.py _CrdWatcher) without a server: a CRD's kind is watched when it appears,
moved to the new version when an update changes the version the mesh reads (objects kept for the new informer's
list), unwatched with its objects gone when the CRD is deleted or missing from a re-list. The same against the real
API server: tests/e2e/test_kube_crd_lifecycle.py."""

from __future__ import annotations

from typing import Any

import pytest

from sailmesh.platform.kube.client import KubeConnection
from sailmesh.platform.kube.informer import Informer, KubeResource
from sailmesh.platform.kube.platform import CRDS, KubePlatform, _CrdWatcher
from tests.unit.test_kube_gateway_status import crd

VS_V1 = KubeResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
VS_V1BETA1 = KubeResource("networking.istio.io", "v1beta1", "virtualservices", "VirtualService")
VS_OBJ = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "r", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
          "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}}


def _vs_crd(*versions: tuple[str, bool]) -> dict[str, Any]:
    return crd("networking.istio.io", "VirtualService", "virtualservices", list(versions))


async def test_crds_start_move_and_stop_their_kinds_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    async def idle(self: Informer) -> None:  # no server: the informers only exist
        return None

    monkeypatch.setattr(Informer, "run", idle)
    platform = KubePlatform("unused")
    platform.conn = KubeConnection.__new__(KubeConnection)
    watcher = _CrdWatcher(platform)
    try:
        watcher.upserted(CRDS, _vs_crd(("v1", True), ("v1beta1", False)))
        assert platform.config_kinds() == [VS_V1]
        platform.store.listed(VS_V1, [VS_OBJ])
        # an update that stops serving v1: the storage version is read instead, the objects stay meanwhile
        watcher.upserted(CRDS, _vs_crd(("v1beta1", True)))
        assert platform.config_kinds() == [VS_V1BETA1] and VS_V1 not in platform.informers
        assert platform.store.get("VirtualService", "default", "r") is not None
        # deleted: unwatched, its objects leave the store
        watcher.deleted(CRDS, _vs_crd(("v1beta1", True)))
        assert platform.config_kinds() == [] and VS_V1BETA1 not in platform.informers
        assert platform.store.get("VirtualService", "default", "r") is None
        # a re-list (after 410) without a CRD watched before unwatches it too
        watcher.listed(CRDS, [_vs_crd(("v1", True))])
        assert platform.config_kinds() == [VS_V1]
        watcher.listed(CRDS, [])
        assert platform.config_kinds() == []
    finally:
        platform.conn = None  # never connected
        await platform.stop()
