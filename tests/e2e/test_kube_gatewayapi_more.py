"""More of the Kubernetes Gateway API on the real kube-apiserver (issue 12), with the Gateway API's CRDs from the
sigs.k8s.io/gateway-api module (standard channel, plus the experimental channel's extra kinds for
BackendTLSPolicy v1alpha3; sailmesh/testing/gatewayapi_crds.py, cached outside the repo):

- `infrastructure.parametersRef`'s `horizontalPodAutoscaler` / `podDisruptionBudget` keys create Istio's
  autoscaling/v2 HorizontalPodAutoscaler and policy/v1 PodDisruptionBudget for the gateway's Deployment; a key
  removed from the ConfigMap deletes its object;
- unmanaged Gateways (Istio's manual deployment: `spec.addresses` Hostnames naming existing Services or a
  ServiceEntry host) get no deployment of their own and the status Istio writes (Programmed, the Services'
  addresses: a LoadBalancer's ingress IP, a ClusterIP Service's or ServiceEntry's host name);
- BackendTLSPolicy objects are read from the API server and their status (ancestors) written back: Accepted for a
  Service target with a CA ConfigMap, TargetNotFound for a missing Service, Invalid for a missing CA.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

from sailmesh.testing import gatewayapi_crds
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e import kube_support as ks
from tests.e2e.test_kube_apiserver import control_plane, kubectl
from tests.e2e.test_kube_gatewayapi import conditions, get_json, install_gateway_api_crds

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)


async def install_experimental_crds(kube: KubeCluster) -> None:
    """The standard channel, then the experimental channel's kinds the standard one lacks (BackendTLSPolicy)."""
    await install_gateway_api_crds(kube)
    extra = await asyncio.to_thread(gatewayapi_crds.experimental_only)
    assert any(p.name.endswith("_backendtlspolicies.yaml") for p in extra), extra
    for path in extra:
        await ks.kubectl(kube, "apply", "--server-side", "-f", str(path))
    await ks.kubectl(kube, "wait", "--for=condition=Established", "crd",
                     "backendtlspolicies.gateway.networking.k8s.io", "--timeout=60s")
    # the Lease the gateway controllers' leader holds lives in the root namespace
    await ks.kubectl(kube, "create", "namespace", "istio-system", check=False)


AUTOSCALED = """
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt-hpa"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: gw-options, namespace: kt-hpa}
data:
  horizontalPodAutoscaler: |
    spec:
      minReplicas: 2
      maxReplicas: 4
%s
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: kt-hpa}
spec:
  gatewayClassName: istio
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: gw-options}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
PDB_KEY = """  podDisruptionBudget: |
    spec:
      minAvailable: 1"""


async def test_parameters_ref_creates_the_autoscaler_and_disruption_budget(kube: KubeCluster,
                                                                           tmp_path: pathlib.Path) -> None:
    """Istio's gateway customization (Istio 1.26+): with the keys in the parametersRef ConfigMap, istiod's
    kube-gateway template adds a HorizontalPodAutoscaler and a PodDisruptionBudget named `<gateway>-istio`."""
    await install_gateway_api_crds(kube)
    await ks.kubectl(kube, "create", "namespace", "istio-system", check=False)
    try:
        async with control_plane(kube, tmp_path):
            await kubectl(kube, "apply", "-f", "-", input=AUTOSCALED % PDB_KEY)

            async def obj(kind: str) -> dict[str, Any]:
                return await get_json(kube, kind, "edge-istio", "-n", "kt-hpa")

            async def both() -> bool:
                return bool(await obj("horizontalpodautoscaler")) and bool(await obj("poddisruptionbudget"))

            await await_for(both, timeout=60, interval=0.5, what="edge-istio's HPA and PDB")
            hpa, pdb = await obj("horizontalpodautoscaler"), await obj("poddisruptionbudget")
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                     "name": "edge-istio"}
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
            assert pdb["spec"]["minAvailable"] == 1
            assert pdb["spec"]["selector"] == {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "edge"}}
            for found in (hpa, pdb):  # removed with the Gateway by the garbage collector
                (owner,) = found["metadata"]["ownerReferences"]
                assert (owner["kind"], owner["name"]) == ("Gateway", "edge")
            assert await obj("deployment")  # the autoscaler's target
            # the key removed from the ConfigMap: its object goes, the other stays
            await kubectl(kube, "apply", "-f", "-", input=AUTOSCALED % "")

            async def pdb_gone() -> bool:
                return not await obj("poddisruptionbudget")

            await await_for(pdb_gone, timeout=60, interval=0.5, what="the PodDisruptionBudget deleted")
            assert await obj("horizontalpodautoscaler")
    finally:
        await ks.kubectl(kube, "delete", "namespace", "kt-hpa", "--wait=false", check=False)


UNMANAGED = """
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt-manual"}}
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: kt-manual}
spec: {type: ClusterIP, selector: {app: ingress}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: edge-lb, namespace: kt-manual}
spec: {type: LoadBalancer, selector: {app: edge}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-gateway, namespace: kt-manual}
spec:
  hosts: [gateway.vm.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm-gateway}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: manual, namespace: kt-manual}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: ingress}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: manual-lb, namespace: kt-manual}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: edge-lb}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: manual-se, namespace: kt-manual}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: gateway.vm.internal}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: manual-missing, namespace: kt-manual}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: nothere}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


async def test_unmanaged_gateways_run_on_existing_services(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """Istio's manual deployment (IsManaged false): no `<gateway>-istio` objects; status as reportGatewayStatus
    writes it: Programmed "assigned to service(s) ..." with the named Service's address (a LoadBalancer's ingress
    IP once it has one, a ClusterIP Service's or a ServiceEntry's host name); a Hostname naming nothing is
    Programmed False."""
    await install_gateway_api_crds(kube)
    await ks.kubectl(kube, "create", "namespace", "istio-system", check=False)
    suffix = "kt-manual.svc.cluster.local"
    try:
        async with control_plane(kube, tmp_path):
            await kubectl(kube, "apply", "-f", "-", input=UNMANAGED)
            await kubectl(kube, "patch", "service", "edge-lb", "-n", "kt-manual", "--subresource=status",
                          "--type=merge", "-p", json.dumps({"status": {"loadBalancer": {"ingress": [
                              {"ip": "203.0.113.7"}]}}}))

            async def status(name: str) -> dict[str, Any] | None:
                gw = await get_json(kube, "gateway", name, "-n", "kt-manual")
                st = gw.get("status") or {}
                programmed = conditions(gw).get("Programmed", {})
                return st if st.get("addresses") or programmed.get("status") == "False" else None

            manual = await await_for(lambda: status("manual"), timeout=60, interval=0.5, what="manual's status")
            assert manual["addresses"] == [{"type": "Hostname", "value": f"ingress.{suffix}"}]
            programmed = {c["type"]: c for c in manual["conditions"]}["Programmed"]
            assert (programmed["status"], programmed["message"]) == (
                "True", f"Resource programmed, assigned to service(s) ingress.{suffix}:80")

            async def lb_address() -> list[Any] | None:  # pending (AddressNotAssigned) until the ingress IP is seen
                return ((await get_json(kube, "gateway", "manual-lb", "-n", "kt-manual")).get("status") or {}).get(
                    "addresses") or None

            lb = await await_for(lb_address, timeout=60, interval=0.5, what="manual-lb's address")
            assert lb == [{"type": "IPAddress", "value": "203.0.113.7"}]
            se = await await_for(lambda: status("manual-se"), timeout=60, interval=0.5, what="manual-se's status")
            assert se["addresses"] == [{"type": "Hostname", "value": "gateway.vm.internal"}]
            assert {c["type"]: c for c in se["conditions"]}["Programmed"]["message"] == (
                "Resource programmed, assigned to service(s) gateway.vm.internal:80")
            missing = await await_for(lambda: status("manual-missing"), timeout=60, interval=0.5,
                                      what="manual-missing's status")
            programmed = {c["type"]: c for c in missing["conditions"]}["Programmed"]
            # Istio's reportGatewayStatus: a Hostname not found is unusable (the embedded mesh says the same)
            assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotUsable")
            assert f'hostname "nothere.{suffix}" not found' in programmed["message"], programmed
            for name in ("manual", "manual-lb", "manual-se", "manual-missing"):  # nothing deployed for them
                assert not await get_json(kube, "deployment", f"{name}-istio", "-n", "kt-manual")
    finally:
        await ks.kubectl(kube, "delete", "namespace", "kt-manual", "--wait=false", check=False)


BACKEND_TLS = """
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kt-btls"}}
---
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: kt-btls}
spec: {selector: {app: secure}, ports: [{name: https, port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: kt-btls}
spec: {selector: {app: other}, ports: [{name: https, port: 443}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: secure-ca, namespace: kt-btls}
data: {ca.crt: "-----BEGIN CERTIFICATE-----\\nnot checked here\\n-----END CERTIFICATE-----\\n"}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: secure, namespace: kt-btls}
spec:
  targetRefs: [{group: "", kind: Service, name: secure}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: secure-ca}]
    hostname: secure.example.com
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: no-service, namespace: kt-btls}
spec:
  targetRefs: [{group: "", kind: Service, name: nothere}]
  validation: {wellKnownCACertificates: System, hostname: nothere.example.com}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: no-ca, namespace: kt-btls}
spec:
  targetRefs: [{group: "", kind: Service, name: other}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: missing-ca}]
    hostname: secure.example.com
"""


async def test_backend_tls_policies_from_the_experimental_crds(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """BackendTLSPolicy v1alpha3 (experimental channel of v1.3) on the API server: the control plane reads the
    policies, converts them as Istio's backend_policies.go (a DestinationRule for the target Service with SIMPLE
    TLS, the SNI and the CA ConfigMap; `invalid://` for a missing CA) and writes each policy's ancestors status
    with Istio's reasons (before session 10 that write was refused: its conditions had no lastTransitionTime)."""
    await install_experimental_crds(kube)
    try:
        async with control_plane(kube, tmp_path) as cp:
            await kubectl(kube, "apply", "-f", "-", input=BACKEND_TLS)

            async def accepted(name: str) -> dict[str, Any] | None:
                pol = await get_json(kube, "backendtlspolicy", name, "-n", "kt-btls")
                ancestors = (pol.get("status") or {}).get("ancestors") or []
                return ancestors[0]["conditions"][0] if ancestors and ancestors[0].get("conditions") else None

            ok = await await_for(lambda: accepted("secure"), timeout=60, interval=0.5, what="secure's status")
            assert (ok["status"], ok["reason"], ok["message"]) == ("True", "Accepted", "Configuration is valid")
            missing = await await_for(lambda: accepted("no-service"), timeout=60, interval=0.5,
                                      what="no-service's status")
            assert (missing["status"], missing["reason"]) == ("False", "TargetNotFound")
            assert missing["message"] == "targetRefs invalid: Service kt-btls/nothere not found"
            no_ca = await await_for(lambda: accepted("no-ca"), timeout=60, interval=0.5, what="no-ca's status")
            assert (no_ca["status"], no_ca["reason"]) == ("False", "Invalid")
            assert "ConfigMap kt-btls/missing-ca not found" in no_ca["message"]
            # the generated DestinationRule (the oldest policy for the Service wins: `secure`)
            rule = cp.config.get("DestinationRule", "kt-btls", "secure-istio-autogenerated-k8s-gateway")
            assert rule is not None, [r.key for r in cp.config.list("DestinationRule")]
            assert rule.spec["host"] == "secure.kt-btls.svc.cluster.local"
            tls = rule.spec["trafficPolicy"]["tls"]
            assert tls["mode"] == "SIMPLE" and tls["sni"] == "secure.example.com"
            assert tls["credentialName"] == "configmap://kt-btls/secure-ca"
            # a bad CA reference fails closed (Istio's InvalidSecretTypeURI: nothing is served)
            other = cp.config.get("DestinationRule", "kt-btls", "other-istio-autogenerated-k8s-gateway")
            assert other is not None and other.spec["trafficPolicy"]["tls"]["credentialName"] == "invalid://"
    finally:
        await ks.kubectl(kube, "delete", "namespace", "kt-btls", "--wait=false", check=False)
