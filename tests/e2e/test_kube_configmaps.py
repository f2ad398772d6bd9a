"""ConfigMaps on the real kube-apiserver reach the control plane's config (platform/kube/platform.py), as Istio's
gateway controller watches them: a BackendTLSPolicy's caCertificateRefs, a listener's frontendValidation and a
Gateway's infrastructure.parametersRef name ConfigMaps of any namespace, which before were not watched (only the
mesh ConfigMap `istio`), so such a CA was "not found" and the policy failed closed. The two ConfigMaps every
namespace holds (kube-root-ca.crt, istio-ca-root-cert) stay out."""

from __future__ import annotations

import pathlib

import pytest

from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e import kube_support as ks
from tests.e2e.test_kube_apiserver import control_plane, kubectl

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)

CA_MAP = """
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt-cm"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: backend-ca, namespace: kt-cm}
data: {ca.crt: "%s"}
"""


async def test_configmaps_of_any_namespace_reach_the_config_and_follow_changes(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    async with control_plane(kube, tmp_path) as cp:
        await kubectl(kube, "apply", "-f", "-", input=CA_MAP % "first")

        def data() -> str | None:
            found = cp.list_resources("ConfigMap", "kt-cm", "backend-ca")
            return str(found[0].get("data", {}).get("ca.crt")) if found else None

        async def has(value: str | None) -> bool:
            return data() == value

        await await_for(lambda: has("first"), timeout=30, what="the ConfigMap in the control plane's config")
        await kubectl(kube, "apply", "-f", "-", input=CA_MAP % "second")
        await await_for(lambda: has("second"), timeout=30, what="the ConfigMap's change")
        # the namespace's published ConfigMaps are not watched
        assert not cp.list_resources("ConfigMap", "kt-cm", "kube-root-ca.crt")
        assert not cp.list_resources("ConfigMap", "kt-cm", "istio-ca-root-cert")
        await kubectl(kube, "delete", "-n", "kt-cm", "configmap/backend-ca")
        await await_for(lambda: has(None), timeout=30, what="the deleted ConfigMap leaving the config")
