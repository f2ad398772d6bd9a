"""The leader's namespace controller: Istio's `istio-ca-root-cert` ConfigMap (key `root-cert.pem`) in every namespace.

Pods' agents read the mesh's trust bundle from it (Istio mounts it at /var/run/secrets/istio). Like istiod's
NamespaceController it skips Kubernetes' own namespaces and runs on the elected replica only (a leader task): each
write names the replica as its field manager, so `metadata.managedFields` shows who wrote it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from sailmesh.platform.kube.client import KubeApiError, KubeConnection

log = logging.getLogger(__name__)

CONFIGMAP = "istio-ca-root-cert"
KEY = "root-cert.pem"
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})


class RootCertPublisher:
    """Keeps the ConfigMap in every namespace equal to the CA's current bundle (checked every `interval` s)."""

    def __init__(self, conn: KubeConnection, namespaces: Callable[[], Iterable[str]], bundle: Callable[[], str],
                 manager: str, interval: float = 0.5) -> None:
        self.conn = conn
        self.namespaces = namespaces
        self.bundle = bundle
        self.manager = manager
        self.interval = interval
        self.written: dict[str, str] = {}  # namespace -> the bundle last written there
        self.writes = 0

    async def run(self) -> None:
        self.written.clear()  # a new term: look at every namespace again
        while True:
            pem = self.bundle()
            for ns in sorted(set(self.namespaces()) - IGNORED_NAMESPACES):
                if self.written.get(ns) != pem:
                    try:
                        await self.publish(ns, pem)
                    except KubeApiError as e:  # a namespace going away, a conflict: next round
                        log.info("root cert ConfigMap in %s: %s", ns, e)
            await asyncio.sleep(self.interval)

    async def publish(self, namespace: str, pem: str) -> None:
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        params = {"fieldManager": self.manager}
        try:
            current = await self.conn.get_json(f"{path}/{CONFIGMAP}")
        except KubeApiError as e:
            if e.code != 404:
                raise
            await self.conn.send_json("POST", path, {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIGMAP, "namespace": namespace},
                "data": {KEY: pem}}, params=params)
            self.writes += 1
        else:
            if (current.get("data") or {}).get(KEY) != pem:
                current["data"] = {**(current.get("data") or {}), KEY: pem}
                await self.conn.send_json("PUT", f"{path}/{CONFIGMAP}", current, params=params)
                self.writes += 1
        self.written[namespace] = pem
