"""Generated-resource cache: proxies with the same scope share packed resources; endpoint-only changes keep the rest.

Keys are (part, epoch of its type, scope). A part is a slice of one type's resources with its own scope:
outbound clusters, routes and endpoints depend only on the proxy's outbound key (`SnapshotIndex.outbound_key`:
for a sidecar its namespace, its Sidecar resource and the VirtualService sourceLabels it matches), so every
sidecar of a namespace usually shares them; inbound clusters and listeners also depend on the proxy's labels,
address and ports. `advance` moves the cache to a new snapshot given its ChangeSet and bumps only the epochs of
the types the change can affect.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from google.protobuf import any_pb2

from sailmesh.generate.clusters import build_inbound, build_outbound
from sailmesh.generate.endpoints import build_endpoints
from sailmesh.generate.listeners import build_listeners
from sailmesh.generate.proxy import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, packed
from sailmesh.generate.routes import build_routes
from sailmesh.generate.scope import index_of
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

ALL_TYPES = frozenset({CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET})


def shared_scope(snapshot: MeshSnapshot, proxy: ProxyView) -> Hashable:
    """What outbound config depends on."""
    return index_of(snapshot).outbound_key(proxy)


def own_scope(_snapshot: MeshSnapshot, proxy: ProxyView) -> Hashable:
    """What per-proxy (inbound, listener) config depends on."""
    return (proxy.scope_key, proxy.ip, tuple(sorted(proxy.app_ports.items())), proxy.workload_name)


class Resources(dict):  # type: ignore[type-arg]
    """A generated mapping (name -> packed Any) that the ADS server's caches can reference weakly."""

    __slots__ = ("__weakref__",)


@dataclass(frozen=True)
class Part:
    """One cached slice of a type's resources."""

    name: str
    type_url: str
    build: Callable[[MeshSnapshot, ProxyView], list]
    scope: Callable[[MeshSnapshot, ProxyView], Hashable]


PARTS: dict[str, tuple[Part, ...]] = {
    CLUSTER: (
        Part("outbound-clusters", CLUSTER, build_outbound, shared_scope),
        Part("inbound-clusters", CLUSTER, build_inbound, own_scope),
    ),
    ENDPOINT: (Part("endpoints", ENDPOINT, build_endpoints, shared_scope),),
    LISTENER: (Part("listeners", LISTENER, build_listeners, own_scope),),
    ROUTE: (Part("routes", ROUTE, build_routes, shared_scope),),
    SECRET: (),
}


# Config kinds that can alter only some xDS types (what the generators read them for); any other kind: every type.
KIND_TYPES: dict[str, frozenset[str]] = {
    "VirtualService": frozenset({ROUTE}),
    "DestinationRule": frozenset({CLUSTER, ENDPOINT, ROUTE}),  # subsets, policies; consistentHash on routes
    "Gateway": frozenset({LISTENER, ROUTE}),
}


@dataclass(frozen=True)
class ChangeSet:
    """What changed since the previous snapshot.

    full: config, services or workloads changed; `kinds` names the config kinds when known (None: anything
    may have changed), so a VirtualService change regenerates routes only. Otherwise only the endpoints of
    `endpoint_hosts` changed: EDS is regenerated, and clusters too when one of those hosts is DNS-resolved
    (its endpoints live inside the cluster) or has resolution NONE (its cluster kind depends on them).
    """

    full: bool = True
    endpoint_hosts: frozenset[str] = frozenset()
    kinds: frozenset[str] | None = None

    @staticmethod
    def endpoints_only(hosts: frozenset[str] | set[str]) -> ChangeSet:
        return ChangeSet(full=False, endpoint_hosts=frozenset(hosts))


def affected_types(snapshot: MeshSnapshot, changes: ChangeSet) -> frozenset[str]:
    """The xDS types a change can alter (the push set)."""
    if changes.full:
        if not changes.kinds:
            return ALL_TYPES - {SECRET}
        return frozenset().union(*(KIND_TYPES.get(k, ALL_TYPES - {SECRET}) for k in changes.kinds))
    out = {ENDPOINT}
    for host in changes.endpoint_hosts:
        svc = snapshot.services.get(host)
        if svc is not None and svc.resolution in ("DNS", "DNS_ROUND_ROBIN", "NONE"):
            out.add(CLUSTER)
    return frozenset(out)


class GeneratedCache:
    """Packed resources per (part, epoch, scope); safe to share across all connections of one event loop."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._epochs: dict[str, int] = dict.fromkeys(ALL_TYPES, 0)
        self._entries: dict[tuple[str, int, Hashable], Resources] = {}
        self._merged: dict[tuple[int, ...], tuple[tuple[dict[str, any_pb2.Any], ...], dict[str, any_pb2.Any]]] = {}
        self.hits = 0
        self.misses = 0

    def advance(self, snapshot: MeshSnapshot, changes: ChangeSet) -> frozenset[str]:
        """Move to `snapshot`; returns the types whose resources may differ (what to push)."""
        if snapshot.version == self._version:
            return frozenset()
        types = affected_types(snapshot, changes) if self._version is not None else ALL_TYPES - {SECRET}
        for t in types:
            self._epochs[t] += 1
        self._version = snapshot.version
        live = {p.name: self._epochs[p.type_url] for parts in PARTS.values() for p in parts}
        self._entries = {k: v for k, v in self._entries.items() if live.get(k[0]) == k[1]}
        live_parts = {id(v) for v in self._entries.values()}
        self._merged = {k: v for k, v in self._merged.items() if all(i in live_parts for i in k)}
        return types

    def get_parts(self, snapshot: MeshSnapshot, proxy: ProxyView, type_url: str) -> tuple[dict[str, any_pb2.Any], ...]:
        """The resources of type_url for proxy at snapshot as its parts (disjoint by name), each shared by the
        proxies of its scope (an unannounced snapshot counts as a full change). Treat them as immutable."""
        if snapshot.version != self._version:
            self.advance(snapshot, ChangeSet())
        epoch = self._epochs[type_url]
        out = []
        for part in PARTS.get(type_url, ()):
            key = (part.name, epoch, part.scope(snapshot, proxy))
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
                hit = Resources(packed(part.build(snapshot, proxy)))
                self._entries[key] = hit
            else:
                self.hits += 1
            out.append(hit)
        return tuple(out)

    def get(self, snapshot: MeshSnapshot, proxy: ProxyView, type_url: str) -> dict[str, any_pb2.Any]:
        """Every resource of type_url for proxy at snapshot, in one mapping (see get_parts).

        The returned mapping is shared (by the proxies of a scope, and across snapshots until the type
        changes): treat it as immutable.
        """
        parts = self.get_parts(snapshot, proxy, type_url)
        keys = tuple(map(id, parts))
        merged = self._merged.get(keys)
        if merged is not None and all(a is b for a, b in zip(merged[0], parts, strict=True)):
            return merged[1]
        out: dict[str, any_pb2.Any] = Resources()
        for part in parts:
            out.update(part)
        # The same mapping object while its parts are the same: the ADS server hashes it once, not per push.
        self._merged[keys] = (parts, out)
        return out

    def __len__(self) -> int:
        return len(self._entries)
