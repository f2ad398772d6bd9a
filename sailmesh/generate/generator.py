"""Generator: the one entry point from (snapshot, proxy, xDS type) to packed Envoy resources.

It owns the type table (which builders make each type, in Istio's push order), the generated-resource cache,
the builders' memos and the error handling: whatever a builder raises for one proxy comes out as a
GenerationError naming the proxy and the type, so the ADS server keeps that proxy's last config and its stream.

Cache keys are (part, epoch of its type, scope). A part is a slice of one type's resources with its own scope:
outbound clusters, routes and endpoints depend only on the proxy's outbound key (SnapshotIndex.outbound_key: for a
sidecar its namespace, its Sidecar resource and the VirtualService sourceLabels it matches), so every sidecar of a
namespace usually shares them; inbound clusters and listeners also depend on the proxy's labels, address and
ports. `advance` moves to a new snapshot and bumps only the epochs of the types a change affects. Parts with
the same content (the same names and Any objects) are one object, across scopes and across one advance, so the
ADS server hashes and encodes each distinct part once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import any_pb2, message

from sailmesh.errors import GenerationError, UnservedTypeError
from sailmesh.generate.clusters import build_inbound, build_outbound
from sailmesh.generate.common import Prepacked, pack
from sailmesh.generate.endpoints import build_endpoints
from sailmesh.generate.envoyfilter import PatchSet, extension_configs, patch_resources, patch_set
from sailmesh.generate.gateway import gateway_secrets
from sailmesh.generate.listeners import backed_services, build_listeners
from sailmesh.generate.memo import Memos
from sailmesh.generate.names import HTTP_PROXY_ROUTE
from sailmesh.generate.routes import build_http_proxy_route, build_port_routes
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE, SECRET, short_name

# A builder returns messages (or Prepacked resources) to pack, or a mapping it packed already (name -> Any)
Builder = Callable[[MeshSnapshot, ProxyView, Memos],
                   Sequence[message.Message | Prepacked] | Mapping[str, any_pb2.Any]]


def outbound_scope(snapshot: MeshSnapshot, proxy: ProxyView) -> Hashable:
    """What outbound config depends on."""
    return snapshot.index.outbound_key(proxy)


def own_scope(_snapshot: MeshSnapshot, proxy: ProxyView) -> Hashable:
    """What per-proxy (inbound, listener) config depends on."""
    return (proxy.scope_key, proxy.ip, tuple(sorted(proxy.app_ports.items())), proxy.workload_name)


class PackedResources(dict[str, any_pb2.Any]):
    """One part's generated resources (name -> packed Any), shared and immutable; the ADS server's caches can
    reference it weakly. `content`: what determines every resource's bytes, in order (Prepacked.content), when
    the builder said so, else None."""

    __slots__ = ("__weakref__", "content")

    def __init__(self, *args: object, content: tuple[Hashable, ...] | None = None) -> None:
        super().__init__(*args)
        self.content = content


@dataclass(frozen=True)
class Part:
    """One cached slice of a type's resources. `holds`: whether the part can hold any of these resource names
    (None: it may hold any); a proxy that subscribed to none of them is not built this part at all."""

    name: str
    build: Builder
    scope: Callable[[MeshSnapshot, ProxyView], Hashable]
    holds: Callable[[frozenset[str]], bool] | None = None


def _holds_http_proxy(names: frozenset[str]) -> bool:
    return HTTP_PROXY_ROUTE in names


def _holds_other_routes(names: frozenset[str]) -> bool:
    return len(names) > 1 or HTTP_PROXY_ROUTE not in names


# The type table, in Istio's push order (xds.types.PUSH_ORDER). SECRET: the workload certificates come from the
# agent over SDS; over ADS the control plane serves only credentialName secrets (`kubernetes://<name>`, as istiod
# does: gateways', and sidecars' for ingress TLS and selecting DestinationRules), an empty answer for anyone else.
TYPES: dict[str, tuple[Part, ...]] = {
    CLUSTER: (
        Part("outbound-clusters", build_outbound, outbound_scope),
        Part("inbound-clusters", lambda s, p, _m: build_inbound(s, p), own_scope),
    ),
    ENDPOINT: (Part("endpoints", build_endpoints, outbound_scope),),
    LISTENER: (Part("listeners", lambda s, p, _m: build_listeners(s, p), own_scope),),
    # A sidecar's `http_proxy` route configuration apart from its per-port ones: the explicit HTTP-proxy listener
    # (an uncaptured sidecar's only outbound one) asks for `http_proxy` alone, and without Sidecar scoping each
    # per-port configuration is megabytes per namespace that nobody would fetch.
    ROUTE: (Part("routes", build_port_routes, outbound_scope, _holds_other_routes),
            Part("http-proxy-route", build_http_proxy_route, outbound_scope, _holds_http_proxy)),
    SECRET: (Part("gateway-secrets", lambda s, p, _m: gateway_secrets(s, p), own_scope),),
    # ECDS: the TypedExtensionConfigs of the proxy's EnvoyFilter EXTENSION_CONFIG patches (Istio's EcdsGenerator)
    EXTENSION_CONFIG: (Part("extension-configs", lambda s, p, m: extension_configs(s, p, m.envoy_filters),
                            own_scope),),
}
assert tuple(TYPES) == PUSH_ORDER, "the type table must list the types in push order"


def _name(msg: message.Message | Prepacked) -> str:
    if isinstance(msg, Prepacked):
        return msg.name
    return str(getattr(msg, "cluster_name", "") or getattr(msg, "name", ""))


def packed(messages: Iterable[message.Message | Prepacked]) -> PackedResources:
    """Messages (or Prepacked resources) packed into Anys, keyed by resource name; a duplicate name is a
    generator bug and raises GenerationError."""
    out = PackedResources()
    contents: list[Hashable] | None = []
    for m in messages:
        name = _name(m)
        if name in out:
            kind = m.packed.type_url.rpartition(".")[2] if isinstance(m, Prepacked) else m.DESCRIPTOR.full_name
            raise GenerationError(f"duplicate {kind} named {name!r}")
        out[name] = m.packed if isinstance(m, Prepacked) else pack(m)
        if contents is not None:
            if isinstance(m, Prepacked) and m.content is not None:
                contents.append(m.content)
            else:
                contents = None
    out.content = tuple(contents) if contents else None
    return out


class Generator:
    """Generates and caches every proxy's resources; one per control plane, used from one event loop."""

    def __init__(self, memos: Memos | None = None) -> None:
        self.memos = memos or Memos()
        self._version: int | None = None
        self._epochs: dict[str, int] = dict.fromkeys(TYPES, 0)
        self._entries: dict[tuple[str, int, Hashable], PackedResources] = {}
        # Parts with the same content are one object: scopes that see the same resources (namespaces without
        # Sidecar scoping) and a part rebuilt unchanged after a change share the server's digests and encoded
        # bytes. Keyed by content identity (names and the ids of their Anys, which the interned part keeps alive).
        self._interned: weakref.WeakValueDictionary[tuple[object, ...], PackedResources] = \
            weakref.WeakValueDictionary()
        self._retired: dict[tuple[str, int, Hashable], PackedResources] = {}  # kept until the next advance
        self.hits = 0
        self.misses = 0

    def advance(self, snapshot: MeshSnapshot, types: Iterable[str] | None) -> None:
        """Move to `snapshot`; the resources of `types` (None: every type) are generated anew, the rest kept."""
        if snapshot.version == self._version:
            return
        for t in TYPES if types is None or self._version is None else types:
            if t in self._epochs:
                self._epochs[t] += 1
        self._version = snapshot.version
        live = {p.name: self._epochs[t] for t, parts in TYPES.items() for p in parts}
        kept = {k: v for k, v in self._entries.items() if live.get(k[0]) == k[1]}
        # the parts just replaced stay alive until the next advance, so a rebuilt part equal to one of them
        # is interned to it (and keeps its identity for the server's caches)
        self._retired = {k: v for k, v in self._entries.items() if k not in kept}
        self._entries = kept

    def generate(self, snapshot: MeshSnapshot, proxy: ProxyView, type_url: str,
                 names: frozenset[str] | None = None) -> tuple[PackedResources, ...]:
        """The resources of type_url for proxy at snapshot, as parts with disjoint names, each shared by the
        proxies of its scope: treat them as immutable. `names`: the proxy subscribed to these only (None: to
        every resource), so parts that cannot hold any of them are left out; the caller still picks the names.
        Raises GenerationError (unknown type, a builder failing)."""
        parts = TYPES.get(type_url)
        if parts is None:
            raise UnservedTypeError(f"resource type {type_url} is not served")
        if snapshot.version != self._version:
            self.advance(snapshot, None)  # an unannounced snapshot counts as a full change
        epoch = self._epochs[type_url]
        patches = patch_set(snapshot, proxy, self.memos.envoy_filters) if snapshot.of_kind("EnvoyFilter") else None
        patched = patches is not None and patches.touches(type_url)
        if names is not None and not patched:  # patches may read or add any resource: then every part
            parts = tuple(p for p in parts if p.holds is None or p.holds(names))
        out = []
        for part in parts:
            try:
                key = (part.name, epoch, part.scope(snapshot, proxy))
                hit = self._entries.get(key)
                if hit is None:
                    self.misses += 1
                    built = part.build(snapshot, proxy, self.memos)
                    hit = self._intern(part.name, PackedResources(built) if isinstance(built, Mapping)
                                       else packed(built))
                    self._entries[key] = hit
                else:
                    self.hits += 1
            except GenerationError as e:
                raise GenerationError(f"generating {short_name(type_url)} for {proxy.id}: {e}") from e
            except Exception as e:  # any builder bug: it must cost one proxy one push, not its stream
                raise GenerationError(f"generating {short_name(type_url)} for {proxy.id}: "
                                      f"{type(e).__name__}: {e}") from e
            out.append(hit)
        if patched and patches is not None:
            return (self._patched(snapshot, proxy, type_url, tuple(out), patches),)
        return tuple(out)

    def _patched(self, snapshot: MeshSnapshot, proxy: ProxyView, type_url: str, parts: tuple[PackedResources, ...],
                 patches: PatchSet) -> PackedResources:
        """The parts with the proxy's EnvoyFilter patches applied, as one part; memoized by the identity of the
        parts and the patches (proxies with the same inputs share the result)."""
        hosts = tuple(backed_services(snapshot, proxy)) if type_url == CLUSTER else ()
        held = (*parts, *(cp for cps in patches.by_apply_to.values() for cp in cps))
        key = ("envoyfilter", type_url, proxy.type, hosts, tuple(map(id, held)))
        hit: PackedResources | None = self.memos.patched.get(key, held)
        if hit is not None:
            return hit
        merged: dict[str, any_pb2.Any] = {}
        for part in parts:
            merged.update(part)
        try:
            result = PackedResources(patch_resources(proxy, type_url, merged, patches, hosts))
        except Exception as e:  # a patch Envoy's protos cannot take: one proxy loses one push, not its stream
            raise GenerationError(f"applying EnvoyFilter patches to {short_name(type_url)} for {proxy.id}: "
                                  f"{type(e).__name__}: {e}") from e
        self.memos.patched.put(key, held, result)
        return result

    def _intern(self, name: str, part: PackedResources) -> PackedResources:
        """The live part with exactly these names and Any objects, or with the same names and equal contents (its
        builder said what determines each resource's bytes: route configurations, whose scopes differ but see
        the same virtual hosts), else `part` (registered as that content)."""
        if part.content is not None:
            key: tuple[object, ...] = (name, "content", tuple(part), part.content)
        else:
            key = (name, "ids", tuple(part), tuple(map(id, part.values())))
        hit = self._interned.get(key)
        if hit is not None:
            return hit
        self._interned[key] = part
        return part

    def resources(self, snapshot: MeshSnapshot, proxy: ProxyView, type_url: str) -> dict[str, any_pb2.Any]:
        """Every resource of type_url in one new mapping (config dumps, tests); raises like generate()."""
        merged: dict[str, any_pb2.Any] = {}
        for part in self.generate(snapshot, proxy, type_url):
            merged.update(part)
        return merged

    def __len__(self) -> int:
        return len(self._entries)
