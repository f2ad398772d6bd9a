"""Apply a proxy's EnvoyFilter patches to its generated resources of one xDS type (after generation, as pilot
applies them while building each type)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, message

from sailmesh.api.envoyfilter_values import pack
from sailmesh.generate.envoyfilter.clusters import added_clusters, patch_cluster
from sailmesh.generate.envoyfilter.listeners import patch_listeners
from sailmesh.generate.envoyfilter.routes import patch_route_configuration
from sailmesh.generate.envoyfilter.select import PatchSet
from sailmesh.snapshot.model import ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE

GATEWAY, INBOUND, OUTBOUND = "GATEWAY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"


def _decode(a: any_pb2.Any, cls: type[message.Message]) -> message.Message:
    msg = cls()
    msg.ParseFromString(a.value)
    return msg


def _packed(msg: message.Message, before: any_pb2.Any | None) -> any_pb2.Any:
    """msg packed; the original Any when nothing changed (keeps the shared object for the server's caches)."""
    after = pack(msg)
    return before if before is not None and before.value == after.value else after


def patch_resources(proxy: ProxyView, type_url: str, resources: Mapping[str, any_pb2.Any], patches: PatchSet,
                    inbound_hosts: Iterable[str] = ()) -> dict[str, any_pb2.Any]:
    """`resources` (name -> Any) of `type_url` with `patches` applied, in pilot's order; resources of other types
    come back unchanged. `inbound_hosts`: the services the proxy's workload backs (CLUSTER service matches on
    inbound clusters)."""
    gateway = proxy.type == "router"
    if type_url == CLUSTER:
        hosts = tuple(inbound_hosts)
        out: dict[str, any_pb2.Any] = {}
        for name, a in resources.items():
            c = _decode(a, cluster_pb2.Cluster)
            assert isinstance(c, cluster_pb2.Cluster)
            context = GATEWAY if gateway else (INBOUND if name.startswith("inbound|") else OUTBOUND)
            if patch_cluster(context, patches, c, hosts):
                out[name] = _packed(c, a)
        for context in (GATEWAY,) if gateway else (OUTBOUND, INBOUND):
            for c in added_clusters(context, patches):
                out[c.name] = pack(c)
        return out
    if type_url == LISTENER:
        listeners = []
        originals: dict[str, any_pb2.Any] = {}
        for name, a in resources.items():
            lis = _decode(a, listener_pb2.Listener)
            assert isinstance(lis, listener_pb2.Listener)
            listeners.append(lis)
            originals[name] = a

        def context_of(lis: listener_pb2.Listener) -> str:
            if gateway:
                return GATEWAY
            return INBOUND if lis.traffic_direction == base_pb2.INBOUND else OUTBOUND

        patched = patch_listeners(context_of, patches, listeners, (GATEWAY,) if gateway else (OUTBOUND, INBOUND))
        return {lis.name: _packed(lis, originals.get(lis.name)) for lis in patched if lis.name}
    if type_url == ROUTE:
        out = {}
        for name, a in resources.items():
            config = _decode(a, route_pb2.RouteConfiguration)
            assert isinstance(config, route_pb2.RouteConfiguration)
            patch_route_configuration(GATEWAY if gateway else OUTBOUND, patches, config)
            out[name] = _packed(config, a)
        return out
    return dict(resources)
