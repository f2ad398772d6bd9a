"""The `credentialName` secrets a sidecar is served over ADS (`kubernetes://<name>`, `kubernetes://<name>-cacert`).

Istio's SDS serves a sidecar the Kubernetes Secrets of its own namespace that its config names: a Sidecar ingress
listener's server `tls.credentialName` (TLS termination at the sidecar, as gateways do it) and the client
`tls.credentialName` of a DestinationRule with a workloadSelector that selects the sidecar (Istio reads it at
sidecars only for such rules). Gateways get theirs from generate/gateway.py (with `granted_secrets` for the Gateway
API's cross-namespace certificateRefs).
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from sailmesh.api.hosts import selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule, Sidecar
from sailmesh.api.resource import Resource
from sailmesh.generate import gateway_tls
from sailmesh.generate.gatewayapi.convert import grant_allows
from sailmesh.generate.tls import upstream_credential_names
from sailmesh.snapshot.model import MeshSnapshot, ProxyView


def client_credentials(dr: Resource) -> list[str]:
    """The SDS names of a DestinationRule's client `credentialName`s (top level, port level, subsets)."""
    rule = model_of(dr, DestinationRule)
    policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets or ())]
    out = []
    for policy in policies:
        if policy is None:
            continue
        out += upstream_credential_names(policy.tls)
        for pls in policy.port_level_settings or ():
            out += upstream_credential_names(pls.tls)
    return out


def selects(dr: Resource, proxy: ProxyView) -> bool:
    """Whether a DestinationRule's workloadSelector selects this proxy (its own namespace only, as Istio)."""
    ws = model_of(dr, DestinationRule).workload_selector
    return ws is not None and dr.namespace == proxy.namespace and selector_matches(ws.match_labels or {}, proxy.labels)


def granted_secrets(snapshot: MeshSnapshot, gateway_ns: str) -> Callable[[str, str], Resource | None]:
    """`(ns, name) -> Secret` for the Secrets of other namespaces a gateway of `gateway_ns` may read: those a
    ReferenceGrant in their namespace opens to Gateways of `gateway_ns` (the Gateway API's cross-namespace
    certificateRefs; Istio's SecretAllowed), else None."""
    grants = snapshot.of_kind("ReferenceGrant")

    def get(ns: str, name: str) -> Resource | None:
        if not grant_allows(grants, "Gateway", gateway_ns, "Secret", ns, name):
            return None
        return next((r for r in snapshot.of_kind("Secret") if r.namespace == ns and r.name == name), None)

    return get


def sidecar_secrets(snapshot: MeshSnapshot, proxy: ProxyView) -> list[secret_pb2.Secret]:
    """The secrets a sidecar's ingress listeners and its selecting DestinationRules name, from the Secrets of the
    sidecar's namespace; missing ones are left out (Envoy keeps the listener or cluster warming, as in Istio)."""
    if proxy.type != "sidecar":
        return []
    sc = snapshot.index.sidecar(proxy)
    ingress = model_of(sc, Sidecar).ingress if sc is not None else None
    wanted = dict.fromkeys(n for il in ingress or () for n in gateway_tls.credential_names(il.tls))
    wanted.update(dict.fromkeys(n for dr in snapshot.of_kind("DestinationRule") for n in client_credentials(dr)
                                if selects(dr, proxy) or n.startswith(gateway_tls.CONFIGMAP_PREFIX)))
    if not wanted:
        return []
    secrets = {r.name: r for r in snapshot.of_kind("Secret") if r.namespace == proxy.namespace}

    def config_map(ns: str, name: str) -> Resource | None:  # ConfigMap CAs: any proxy may read them (Istio's sds.go)
        return next((r for r in snapshot.of_kind("ConfigMap") if r.namespace == ns and r.name == name), None)

    return [s for n in wanted
            if (s := gateway_tls.secret_resource(n, secrets, proxy.namespace, config_map=config_map)) is not None]
