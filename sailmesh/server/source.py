"""The contract between the ADS server and whatever produces resources for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from envoy.config.core.v3 import base_pb2
from google.protobuf.any_pb2 import Any as AnyProto

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# Push order that keeps Envoy from referencing what it has not got yet (Istio's order).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# Istio's short names for the types (metric labels, proxy-status columns).
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds", SECRET: "sds"}


def short_name(type_url: str) -> str:
    """Istio's short name of a type URL (cds, eds, ...), or the message name for other types."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


class Generated:
    """The resources of one type for one proxy. Each resource is a packed Any, keyed by its name.

    A source may hand them over in parts (disjoint name sets): proxies of a scope share their large outbound
    part and differ in a small own part, and the server hashes and encodes each part once instead of a merged
    copy per proxy. Treat every mapping and its Anys as immutable: the server caches hashes by object
    identity, so a change must come as a new mapping (and new Anys).
    """

    __slots__ = ("_merged", "parts")

    def __init__(self, resources: Mapping[str, AnyProto] | None = None,
                 parts: tuple[Mapping[str, AnyProto], ...] = ()) -> None:
        self.parts: tuple[Mapping[str, AnyProto], ...] = (resources,) if resources is not None else parts
        self._merged: Mapping[str, AnyProto] | None = resources

    @property
    def resources(self) -> Mapping[str, AnyProto]:
        """Every resource in one mapping (merged on first use when given in parts)."""
        if self._merged is None:
            if len(self.parts) == 1:
                self._merged = self.parts[0]
            else:
                merged: dict[str, AnyProto] = {}
                for part in self.parts:
                    merged.update(part)
                self._merged = merged
        return self._merged


@dataclass(frozen=True)
class PushRequest:
    """A change the source asks the server to send: which types may have changed, for which proxies."""

    version: str
    type_urls: frozenset[str] | None = None  # None = every type
    proxies: frozenset[str] | None = None  # node ids; None = every proxy
    reason: str = ""


class ResourceSource(Protocol):
    """Produces resources for a connected proxy. Implemented by the control plane (generate + snapshot)."""

    def proxy_connected(self, node: base_pb2.Node) -> object:
        """Validate and remember a new proxy; returns an opaque proxy handle, raises XdsError to refuse."""
        ...

    def proxy_disconnected(self, handle: object) -> None:
        """Forget a proxy."""
        ...

    def generate(self, handle: object, type_url: str) -> Generated:
        """Every resource of type_url for this proxy at the current snapshot (the server filters names)."""
        ...

    def version(self) -> str:
        """The current snapshot version (the server stamps responses with it)."""
        ...
