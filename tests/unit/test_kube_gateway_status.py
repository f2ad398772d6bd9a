"""platform/kube without a server: which Gateway API CRDs are watched (and at which version), the store's keys for the
Gateway API's Gateway, the status Istio writes for a Gateway's addresses, condition times, the gateway objects
made for a Gateway, and the istio-ca-secret layout. The same code against the real API server:
tests/e2e/test_kube_gatewayapi.py and test_kube_shared_ca.py."""

from __future__ import annotations

import base64
from typing import Any

from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.ca.authority import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, CertificateAuthority
from sailmesh.platform.kube.casecret import ca_secret_body, write_layout
from sailmesh.platform.kube.gatewaydeploy import gateway_objects
from sailmesh.platform.kube.gatewaystatus import gateway_addresses, with_others, with_times
from sailmesh.platform.kube.informer import KubeResource
from sailmesh.platform.kube.platform import istio_kinds
from sailmesh.platform.kube.store import KubeStore
from sailmesh.webhook.inject import InjectionConfig

GATEWAYS = KubeResource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")


def crd(group: str, kind: str, plural: str, versions: list[tuple[str, bool]], scope: str = "Namespaced"
        ) -> dict[str, Any]:
    return {"spec": {"group": group, "scope": scope, "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": n, "served": True, "storage": s} for n, s in versions]}}


def test_gateway_api_crds_are_watched_at_a_version_sailmesh_reads() -> None:
    gw = istio_kinds(crd("gateway.networking.k8s.io", "Gateway", "gateways", [("v1", True), ("v1beta1", False)]))
    assert gw == GATEWAYS
    grant = istio_kinds(crd("gateway.networking.k8s.io", "ReferenceGrant", "referencegrants",
                            [("v1", True), ("v1beta1", False)]))
    assert grant is not None and grant.version == "v1beta1"  # the version api/kinds.py reads
    cls = istio_kinds(crd("gateway.networking.k8s.io", "GatewayClass", "gatewayclasses", [("v1", True)], "Cluster"))
    assert cls is not None and not cls.namespaced
    # kinds the mesh does not convert, and other groups, are not watched
    assert istio_kinds(crd("gateway.networking.k8s.io", "UDPRoute", "udproutes", [("v1alpha2", True)])) is None
    assert istio_kinds(crd("example.com", "Gateway", "gateways", [("v1", True)])) is None


def gateway_obj(name: str = "gw", rv: str = "1", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "web", "resourceVersion": rv, "uid": "u-1",
                         "annotations": annotations or {}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


def test_the_gateway_api_gateway_is_keyed_as_kubernetes_gateway_and_leaves_istio_gateways_alone() -> None:
    store = KubeStore()
    istio_gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"selector": {"istio": "ingressgateway"}, "servers": []}}
    store.upserted(KubeResource("networking.istio.io", "v1", "gateways", "Gateway"), istio_gw)
    store.listed(GATEWAYS, [gateway_obj()])
    assert set(store.keys()) == {ResourceKey("Gateway", "web", "gw"), ResourceKey("KubernetesGateway", "web", "gw")}
    store.deleted(GATEWAYS, gateway_obj())  # the Gateway API's one goes, Istio's stays
    assert set(store.keys()) == {ResourceKey("Gateway", "web", "gw")}
    store.upserted(GATEWAYS, gateway_obj())
    store.listed(GATEWAYS, [])  # a re-list without Gateway API Gateways leaves Istio's Gateway alone too
    assert set(store.keys()) == {ResourceKey("Gateway", "web", "gw")}


def _gw(annotations: dict[str, str] | None = None) -> Resource:
    return resource_from_dict(gateway_obj(annotations=annotations))


def _service(kind: str, ingress: list[dict[str, str]] | None = None) -> Resource:
    return resource_from_dict({"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": "gw-istio", "namespace": "web"},
                               "spec": {"type": kind, "ports": [{"port": 80}]},
                               "status": {"loadBalancer": {"ingress": ingress or []}}})


CONVERTED = {"conditions": [
    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"},
    {"type": "Programmed", "status": "True", "reason": "Programmed",
     "message": "Resource programmed, assigned to service(s) gw-istio.web.svc.cluster.local:80"}]}


def test_gateway_addresses_follow_istio_rules() -> None:
    host = "gw-istio.web.svc.cluster.local"
    # ClusterIP: the Service's host name, Programmed as converted
    out = gateway_addresses(_gw(), _service("ClusterIP"), "cluster.local", CONVERTED)
    assert out["addresses"] == [{"type": "Hostname", "value": host}]
    assert out["conditions"] == CONVERTED["conditions"]
    # LoadBalancer with an address: that address
    out = gateway_addresses(_gw(), _service("LoadBalancer", [{"ip": "203.0.113.7"}]), "cluster.local", CONVERTED)
    assert out["addresses"] == [{"type": "IPAddress", "value": "203.0.113.7"}]
    # LoadBalancer still pending: Istio's AddressNotAssigned
    out = gateway_addresses(_gw(), _service("LoadBalancer"), "cluster.local", CONVERTED)
    programmed = out["conditions"][1]
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotAssigned")
    assert programmed["message"] == (f"Assigned to service(s) {host}:80, but failed to assign to all requested "
                                     f'addresses: address pending for hostname "{host}"')
    # no Service: AddressNotUsable
    out = gateway_addresses(_gw(), None, "cluster.local", CONVERTED)
    assert out["conditions"][1]["reason"] == "AddressNotUsable" and out["addresses"] == []


def test_condition_times_are_kept_while_the_status_is_unchanged() -> None:
    first = with_times(CONVERTED, {}, "2026-01-01T00:00:00Z")
    assert [c["lastTransitionTime"] for c in first["conditions"]] == ["2026-01-01T00:00:00Z"] * 2
    again = with_times(CONVERTED, first, "2026-01-02T00:00:00Z")
    assert again == first  # nothing to write
    flipped = {"conditions": [CONVERTED["conditions"][0], {**CONVERTED["conditions"][1], "status": "False"}]}
    later = with_times(flipped, first, "2026-01-03T00:00:00Z")
    assert [c["lastTransitionTime"] for c in later["conditions"]] == ["2026-01-01T00:00:00Z",
                                                                     "2026-01-03T00:00:00Z"]
    routes = {"parents": [{"parentRef": {"name": "gw"}, "conditions": CONVERTED["conditions"]}]}
    stamped = with_times(routes, {}, "T1")
    assert with_times(routes, stamped, "T2") == stamped
    # a BackendTLSPolicy's ancestors too: the CRD requires lastTransitionTime (the API server answered 422 without)
    policy = {"ancestors": [{"ancestorRef": {"kind": "Service", "name": "svc"}, "conditions": CONVERTED["conditions"]}]}
    stamped = with_times(policy, {}, "T1")
    assert [c["lastTransitionTime"] for c in stamped["ancestors"][0]["conditions"]] == ["T1", "T1"]
    assert with_times(policy, stamped, "T2") == stamped


def test_other_controllers_route_parents_and_policy_ancestors_are_kept_first() -> None:
    """Istio's createRouteStatus: parents another controller wrote are kept, before ours; our own stale ones go."""
    theirs = {"parentRef": {"name": "other-gw"}, "controllerName": "example.com/other", "conditions": []}
    stale = {"parentRef": {"name": "gone"}, "controllerName": "istio.io/gateway-controller", "conditions": []}
    ours = {"parentRef": {"name": "gw"}, "controllerName": "istio.io/gateway-controller", "conditions": []}
    current = {"parents": [stale, theirs], "ancestors": [theirs]}
    assert with_others({"parents": [ours]}, current) == {"parents": [theirs, ours]}
    assert with_others({"ancestors": [ours]}, current) == {"ancestors": [theirs, ours]}
    assert with_others({"conditions": []}, current) == {"conditions": []}  # a Gateway's own status: nothing added


def test_a_gateway_gets_its_own_deployment_and_service_selected_by_its_name() -> None:
    objs = {o["kind"]: o for o in gateway_objects(_gw(), "istio-system", InjectionConfig())}
    assert set(objs) == {"ServiceAccount", "Deployment", "Service"}
    for o in objs.values():
        assert o["metadata"]["name"].startswith("gw-istio") and o["metadata"]["namespace"] == "web"
        assert o["metadata"]["ownerReferences"][0] == {"apiVersion": "gateway.networking.k8s.io/v1",
                                                       "kind": "Gateway", "name": "gw", "uid": "u-1",
                                                       "controller": True}
    svc, dep = objs["Service"], objs["Deployment"]
    assert svc["spec"]["type"] == "LoadBalancer"  # Istio's default
    assert svc["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "gw"}
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(15021, 15021), (80, 8080)]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["gateway.networking.k8s.io/gateway-name"] == "gw"
    [proxy] = dep["spec"]["template"]["spec"]["containers"]
    assert "gateway.networking.k8s.io/gateway-name=gw" in proxy["command"][proxy["command"].index("--labels") + 1]
    assert "router" in proxy["command"]
    cluster_ip = {o["kind"]: o for o in gateway_objects(
        _gw({"networking.istio.io/service-type": "ClusterIP"}), "istio-system", InjectionConfig())}
    assert cluster_ip["Service"]["spec"]["type"] == "ClusterIP"


def test_istio_ca_secret_layout_and_the_files_the_ca_loads(tmp_path: Any) -> None:
    ca = CertificateAuthority.self_signed(tmp_path / "state")
    cert = (tmp_path / "state" / "ca" / ROOT_CERT).read_text()
    key = (tmp_path / "state" / "ca" / CA_KEY).read_text()
    body = ca_secret_body("istio-system", cert, key)
    assert body["type"] == "istio.io/ca-root"
    assert set(body["data"]) == {CA_CERT, CA_KEY, CERT_CHAIN, "key.pem", ROOT_CERT}
    files = {k: base64.b64decode(v).decode() for k, v in body["data"].items()}
    write_layout(tmp_path / "out", files)
    assert (tmp_path / "out" / CA_KEY).stat().st_mode & 0o077 == 0
    loaded = CertificateAuthority.plugin(tmp_path / "out")
    assert loaded.roots == ca.roots
