"""The single entry point: every resource of one xDS type for one proxy, packed and keyed by name."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import any_pb2, message

from sailmesh.errors import GenerationError, SailmeshError
from sailmesh.generate.clusters import build_inbound, build_outbound
from sailmesh.generate.common import Prepacked, packed_once
from sailmesh.generate.endpoints import build_endpoints
from sailmesh.generate.listeners import build_listeners
from sailmesh.generate.routes import build_routes
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

# The xDS type URLs (equal to sailmesh.server.source's; generate sits below server and cannot import it).
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

Builder = Callable[[MeshSnapshot, ProxyView], list]


def _clusters(snapshot: MeshSnapshot, proxy: ProxyView) -> list:
    return build_outbound(snapshot, proxy) + build_inbound(snapshot, proxy)


BUILDERS: dict[str, Builder] = {
    CLUSTER: _clusters,
    ENDPOINT: build_endpoints,
    LISTENER: build_listeners,
    ROUTE: build_routes,
    SECRET: lambda _s, _p: [],  # secrets come from SDS (the agent), not from the generators
}


def _name(msg: message.Message | Prepacked) -> str:
    if isinstance(msg, Prepacked):
        return msg.name
    return str(getattr(msg, "cluster_name", "") or getattr(msg, "name", ""))


def packed(messages: list) -> dict[str, any_pb2.Any]:
    """Messages packed into Anys, keyed by resource name (duplicate names are a generator bug)."""
    out: dict[str, any_pb2.Any] = {}
    for m in messages:
        name = _name(m)
        if name in out:
            kind = m.packed.type_url.rpartition(".")[2] if isinstance(m, Prepacked) else m.DESCRIPTOR.full_name
            raise GenerationError(f"duplicate {kind} named {name!r}")
        out[name] = packed_once(m)
    return out


def generate_for(snapshot: MeshSnapshot, proxy: ProxyView, type_url: str) -> dict[str, any_pb2.Any]:
    """Every resource of `type_url` for `proxy` at `snapshot`, packed, keyed by name."""
    builder = BUILDERS.get(type_url)
    if builder is None:
        raise GenerationError(f"unknown resource type {type_url}")
    try:
        return packed(builder(snapshot, proxy))
    except GenerationError:
        raise
    except (SailmeshError, ValueError, TypeError, KeyError) as e:  # malformed config validation let through
        raise GenerationError(f"generating {type_url.rpartition('.')[2]} for {proxy.id}: {e}") from e
