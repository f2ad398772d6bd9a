"""The xDS resource types sailmesh serves: type URLs, Istio's push order and short names."""

from __future__ import annotations

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# ECDS: filter configurations an HTTP filter's `config_discovery` asks for by name (EnvoyFilter EXTENSION_CONFIG)
EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
# Push order that keeps Envoy from referencing what it has not got yet (Istio's order; ECDS after the rest).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, EXTENSION_CONFIG)
# Types whose every response carries the full set (Envoy subscribes to them with a wildcard).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# Istio's short names for the types (metric labels, proxy-status columns).
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds", SECRET: "sds", EXTENSION_CONFIG: "ecds"}


def short_name(type_url: str) -> str:
    """Istio's short name of a type URL (cds, eds, ...), or the message name for other types."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
