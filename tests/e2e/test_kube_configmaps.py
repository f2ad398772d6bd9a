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



def namespace_and_config_map(ns: str, name: str) -> str:
    """A Namespace and the head of a ConfigMap in it (its `data` follows)."""
    return f"""
{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "{ns}"}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}}}
"""


CA_MAP = namespace_and_config_map("kt-cm", "backend-ca") + """data: {ca.crt: "%s"}
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


PARAMETERS = namespace_and_config_map("kt-params", "gw-options") + """data:
  deployment: |
    spec:
      replicas: %d
  service: |
    metadata:
      annotations: {example.com/lb: internal}
    spec:
      type: ClusterIP
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: kt-params}
spec:
  gatewayClassName: istio
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: gw-options}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken, namespace: kt-params}
spec:
  gatewayClassName: istio
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: nothere}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


async def test_parameters_ref_overlays_reach_the_gateway_objects(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """Istio's automated-deployment customization on the API server: the ConfigMap's `deployment` and `service`
    overlays are merged into `edge-istio` (replicas, Service type and annotation), a change of the ConfigMap
    follows; a Gateway naming a missing ConfigMap is not Accepted (InvalidParameters) and gets no deployment."""
    import json

    from tests.e2e.test_kube_gatewayapi import install_gateway_api_crds

    await install_gateway_api_crds(kube)
    # the Lease the gateway controllers' leader holds lives in the root namespace
    await ks.kubectl(kube, "create", "namespace", "istio-system", check=False)
    try:
        async with control_plane(kube, tmp_path):
            await kubectl(kube, "apply", "-f", "-", input=PARAMETERS % 2)

            async def get(*args: str) -> dict[str, object]:
                out = await ks.kubectl(kube, "get", *args, "-n", "kt-params", "-o", "json", check=False)
                return dict(json.loads(out)) if out.strip() else {}

            async def replicas(n: int) -> bool:
                return (await get("deployment", "edge-istio")).get("spec", {}).get("replicas") == n  # type: ignore[union-attr]

            await await_for(lambda: replicas(2), timeout=60, interval=0.5, what="edge-istio with 2 replicas")
            svc = await get("service", "edge-istio")
            assert svc["spec"]["type"] == "ClusterIP"  # type: ignore[index]
            assert svc["metadata"]["annotations"]["example.com/lb"] == "internal"  # type: ignore[index]
            await kubectl(kube, "apply", "-f", "-", input=PARAMETERS % 3)
            await await_for(lambda: replicas(3), timeout=60, interval=0.5, what="the ConfigMap's change applied")

            async def invalid() -> bool:
                conds = {c["type"]: c for c in (await get("gateway", "broken")).get(
                    "status", {}).get("conditions") or ()}  # type: ignore[union-attr]
                return conds.get("Accepted", {}).get("reason") == "InvalidParameters"

            await await_for(invalid, timeout=60, interval=0.5, what="Gateway broken Accepted=False InvalidParameters")
            assert not await get("deployment", "broken-istio")
    finally:
        await ks.kubectl(kube, "delete", "namespace", "kt-params", "--wait=false", check=False)
