"""push_request: the one place that decides which xDS types and proxies a change affects."""

from __future__ import annotations

from sailmesh.api.change import Change
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import Gateway, Sidecar
from sailmesh.generate.credentials import client_credentials
from sailmesh.generate.gateway_tls import CONFIGMAP_PREFIX
from sailmesh.generate.upstream_l4 import has_tunnel
from sailmesh.registry.jwks import JWKS_KIND
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL
from sailmesh.snapshot.build import ENDPOINT_KINDS, changed_endpoints
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, SECRET

EVERY_TYPE = frozenset({CLUSTER, ENDPOINT, LISTENER, ROUTE})  # what the generators make from most config
# Secrets: workload certificates come from the agent's SDS; over ADS only credentialName secrets (gateways'; and
# sidecars' for Sidecar ingress TLS and selecting DestinationRules, generate/credentials.py)
WITH_SECRETS = EVERY_TYPE | {SECRET}
EVERY_SERVED_TYPE = WITH_SECRETS | {EXTENSION_CONFIG}  # ECDS: EnvoyFilter EXTENSION_CONFIG patches only
# Config kinds whose changes alter only some xDS types (what the generators read them for); any other kind can
# alter every type.
KIND_TYPES: dict[str, frozenset[str]] = {
    "VirtualService": frozenset({ROUTE}),
    # subsets, policies; consistentHash on routes; client credentialName secrets (gateways)
    "DestinationRule": frozenset({CLUSTER, ENDPOINT, ROUTE, SECRET}),
    "Gateway": frozenset({LISTENER, ROUTE, SECRET}),  # servers; the credentialName secrets they reference
    # credentialName secrets, served over ADS: only the proxies naming them subscribe, and only those whose
    # secret changed get a response (the server skips what a proxy already holds)
    "Secret": frozenset({SECRET}),
    # Gateway API: cross-namespace refs (backends; certificateRefs, whose secrets it lets a gateway read)
    "ReferenceGrant": WITH_SECRETS,
    "Telemetry": frozenset({LISTENER, CLUSTER}),  # access logs and tracers on listeners, collector clusters
    "AuthorizationPolicy": frozenset({LISTENER}),  # RBAC / ext_authz filters live in the listeners
    "RateLimit": frozenset({LISTENER}),  # local_ratelimit filters in the inbound and gateway listeners
    # only the mesh ConfigMap matters to proxies, and a change of the mesh config is caught above (and a Gateway API
    # frontendValidation's CA ConfigMap: _config_map_cas)
    "ConfigMap": frozenset(),
    # jwt_authn lives in the listeners' HTTP filter chains (keys inlined from the snapshot's fetched key sets)
    "RequestAuthentication": frozenset({LISTENER}),
    "EnvoyFilter": EVERY_TYPE | {EXTENSION_CONFIG},  # patches to any generated type, and ECDS values
    JWKS_KIND: frozenset({LISTENER}),
    # inbound filter chains; namespace/mesh DISABLE turns the clients' auto mTLS off (clusters)
    "PeerAuthentication": frozenset({LISTENER, CLUSTER}),
}
# Resolutions whose endpoints live in the cluster (DNS: as its load assignment, as in Istio) or decide its kind
# (NONE: a forwarding cluster without endpoints, EDS with them): an endpoint change there is a cluster change.
CLUSTER_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN", "NONE"})


def _identities(snapshot: MeshSnapshot, host: str, port: int) -> frozenset[tuple[str, str]]:
    """(namespace, service account) of a service port's endpoints with a sidecar: what mTLS SAN checks read
    (tls.service_accounts)."""
    return frozenset((e.workload.partition("/")[0], e.service_account)
                     for e in snapshot.endpoints.get((host, port), ())
                     if e.workload and e.labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO)


def _ingress_credentials(snapshot: MeshSnapshot) -> bool:
    """Whether a Sidecar's ingress listener names a credential (Istio's validation refuses that; unvalidated
    config can still carry it)."""
    return any(il.tls is not None and (il.tls.credential_name or il.tls.credential_names)
               for sc in snapshot.of_kind("Sidecar") for il in model_of(sc, Sidecar).ingress or ())


def _config_map_cas(snapshot: MeshSnapshot) -> bool:
    """Whether a proxy takes a CA from a ConfigMap (served over ADS by generate/gateway_tls.py): a gateway server's
    client CA (a Gateway API frontendValidation's `configmap://` caCertCredentialName) or a DestinationRule's (a
    BackendTLSPolicy's `configmap://` credentialName)."""
    return any(server.tls is not None and (server.tls.ca_cert_credential_name or "").startswith(CONFIGMAP_PREFIX)
               for gw in snapshot.of_kind("Gateway") for server in model_of(gw, Gateway).servers or ()) or \
        any(n.startswith(CONFIGMAP_PREFIX) for dr in snapshot.of_kind("DestinationRule")
            for n in client_credentials(dr))


def affected_types(change: Change, previous: MeshSnapshot, current: MeshSnapshot) -> frozenset[str]:
    """The xDS types whose resources may differ between the two snapshots because of `change`."""
    if change.full:
        return EVERY_SERVED_TYPE
    if current.mesh != previous.mesh or current.mesh_config is not previous.mesh_config:
        return EVERY_TYPE
    types: set[str] = set()
    for kind in change.kinds - ENDPOINT_KINDS:
        types |= KIND_TYPES.get(kind, EVERY_TYPE)
    if "Sidecar" in change.kinds and (_ingress_credentials(previous) or _ingress_credentials(current)):
        types.add(SECRET)  # a Sidecar ingress listener's credentialName secrets (generate/credentials.py)
    if "ConfigMap" in change.kinds and (_config_map_cas(previous) or _config_map_cas(current)):
        types.add(SECRET)
    if "DestinationRule" in change.kinds and (has_tunnel(previous) or has_tunnel(current)):
        types.add(LISTENER)  # a rule's `tunnel` is the outbound tcp_proxy's tunneling_config (upstream_l4)
    if change.kinds & ENDPOINT_KINDS:
        if current.services is not previous.services and current.services != previous.services:
            return EVERY_TYPE
        for host, port in changed_endpoints(previous, current):
            types.add(ENDPOINT)
            svc = current.services.get(host) or previous.services.get(host)
            if svc is not None and svc.resolution in CLUSTER_RESOLUTIONS:
                types.add(CLUSTER)
            elif _identities(previous, host, port) != _identities(current, host, port):
                types.add(CLUSTER)  # mTLS clusters verify the service accounts behind the service (Istio: full push)
    return frozenset(types)


def push_request(change: Change, previous: MeshSnapshot, current: MeshSnapshot) -> PushRequest | None:
    """What to push after `change` moved the mesh from `previous` to `current`; None: nothing to push.

    Every proxy is named (None): a proxy whose resources did not change gets nothing, as the ADS server skips
    responses equal to what the proxy holds.
    """
    types = affected_types(change, previous, current)
    if not types:
        return None
    reason = "full" if change.full else ",".join(sorted(change.kinds))
    return PushRequest(version=str(current.version), type_urls=types, reason=reason)
