"""ClusterLoadAssignments (EDS) for every EDS cluster: healthy endpoints, subset-filtered, grouped by locality,
each labelled with its tlsMode for auto mTLS."""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.any_pb2 import Any as AnyProto

from sailmesh.api import locality as loc
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule, PortTrafficPolicy
from sailmesh.api.resource import Resource
from sailmesh.errors import GenerationError
from sailmesh.generate import locality, names
from sailmesh.generate.common import Prepacked, socket_address, u32
from sailmesh.generate.memo import Memos, same_objects
from sailmesh.generate.policy import effective_policy
from sailmesh.generate.scope import destination_rule, visible_services
from sailmesh.generate.tls import endpoint_metadata
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, ProxyView, Service, ServicePort

DNS_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN"})
EndpointMap = Mapping[tuple[str, int], tuple[Endpoint, ...]]  # MeshSnapshot.endpoints


def discovery(snapshot: MeshSnapshot, svc: Service) -> str:
    """How a service's clusters find endpoints: "dns", "eds", or "forward" (dynamic forward proxy).

    resolution NONE is Istio's ORIGINAL_DST; explicitly proxied requests have no original destination,
    so a NONE service without known endpoints (a passthrough ServiceEntry) forwards to the request's
    Host, and one with endpoints (a headless Service) uses EDS like STATIC.
    """
    if svc.resolution in DNS_RESOLUTIONS:
        return "dns"
    if svc.resolution == "NONE" and not svc.selector and not any(
        snapshot.endpoints.get((svc.hostname, p.port)) for p in svc.ports
    ):
        return "forward"
    return "eds"


def _locality(text: str) -> base_pb2.Locality:
    region, zone, subzone = loc.split(text)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


def select(endpoints: Iterable[Endpoint], labels: Mapping[str, str] | None) -> list[Endpoint]:
    """Healthy endpoints whose labels carry every subset label (all of them when labels is None)."""
    out = []
    for e in endpoints:
        if not e.healthy:
            continue
        if labels and not all(e.labels.get(k) == v for k, v in labels.items()):
            continue
        out.append(e)
    return out


def _lb_endpoint(e: Endpoint) -> ec.LbEndpoint:
    lb = ec.LbEndpoint(endpoint=ec.Endpoint(address=socket_address(e.address, e.port)),
                       load_balancing_weight=u32(max(1, e.weight)))
    md = endpoint_metadata(e)  # auto mTLS: endpoints with a sidecar say tlsMode istio
    if md is not None:
        lb.metadata.CopyFrom(md)
    return lb


def _group_endpoints(g: locality.Group) -> ec.LocalityLbEndpoints:
    lle = ec.LocalityLbEndpoints(lb_endpoints=[_lb_endpoint(e) for e in g.endpoints],
                                 load_balancing_weight=u32(g.weight), priority=g.priority)
    if g.locality:
        lle.locality.CopyFrom(_locality(g.locality))
    return lle


def locality_endpoints(endpoints: Iterable[Endpoint]) -> list[ec.LocalityLbEndpoints]:
    """Endpoints grouped by locality (sorted, stable order), each with its weight."""
    return [_group_endpoints(g) for g in locality.groups(list(endpoints))]


def assignment(cluster: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """One ClusterLoadAssignment."""
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=locality_endpoints(endpoints))


LocalityShape = tuple[locality.Setting, bool, str, tuple[tuple[str, str | None], ...]]


def locality_lb(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, dr: Resource | None, subset: str,
                port: int) -> LocalityShape | None:
    """locality_shape for one cluster of the service (`subset`, `port`), without merging the rule's policy when
    nothing can apply."""
    mesh = snapshot.mesh_config
    if not loc.from_labels(proxy.labels) or (dr is None and mesh.locality_lb_setting is None
                                             and mesh.zone_aware_lb_setting is None and not svc.traffic_distribution):
        return None  # no rule with outlier detection or distribute, no traffic distribution can apply
    return locality_shape(snapshot, proxy, svc, effective_policy(dr, subset, port))


def locality_shape(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service,
                   policy: PortTrafficPolicy) -> LocalityShape | None:
    """What locality load balancing needs for one cluster of this proxy (None: it does not apply): the setting,
    whether outlier detection allows failover, the proxy's locality and the labels failoverPriority reads (the
    whole shape is hashable: it keys the memos of assignments and DNS clusters)."""
    own = loc.from_labels(proxy.labels)
    if not own:
        return None
    lb = locality.setting(snapshot, policy, svc)
    failover = policy.outlier_detection is not None
    # priorities whatever the outliers: zone-aware settings, a service's traffic distribution
    forced = (isinstance(lb, locality.ZoneAwareSetting) and lb.enabled) or \
        (isinstance(lb, locality.LocalitySetting) and lb.force_failover)
    if lb is None or not (lb.distribute or failover or forced):
        return None
    labels = tuple((n, proxy.labels.get(n)) for n in (p.partition("=")[0] for p in lb.failover_priority))
    return (lb, failover, own, labels)


def shaped_endpoints(endpoints: list[Endpoint], proxy: ProxyView,
                     shape: LocalityShape) -> list[ec.LocalityLbEndpoints]:
    """The endpoints grouped by locality with the proxy's locality priorities and weights (locality.apply): the
    LocalityLbEndpoints of an EDS assignment and of a DNS cluster's inline one alike."""
    lb, failover, own, _ = shape
    gs = locality.apply(locality.groups(endpoints), own, proxy.labels, lb, failover)
    return [_group_endpoints(g) for g in gs]


def subset_labels(snapshot: MeshSnapshot, proxy_ns: str, service: Service,
                  proxy_labels: Mapping[str, str] | None = None) -> list[tuple[str, Mapping[str, str]]]:
    """("", {}) for the default cluster, then (subset name, labels) per DestinationRule subset (first of a name)."""
    dr = destination_rule(snapshot, proxy_ns, service, proxy_labels)
    out: dict[str, Mapping[str, str]] = {"": {}}
    if dr is not None:
        for s in model_of(dr, DestinationRule).subsets or ():
            if s.name and s.name not in out:
                out[s.name] = s.labels or {}
    return list(out.items())


def is_passthrough(policy: PortTrafficPolicy) -> bool:
    """DestinationRule `loadBalancer.simple: PASSTHROUGH` for one cluster (port level and subset merged): its
    cluster resolves the service's name (clusters.py) and gets no ClusterLoadAssignment."""
    lb = policy.load_balancer
    return lb is not None and lb.simple == "PASSTHROUGH"


def forwards_by_authority(snapshot: MeshSnapshot, svc: Service, port: ServicePort, policy: PortTrafficPolicy) -> bool:
    """Whether an explicitly proxied PASSTHROUGH cluster of this port is a dynamic forward proxy to the request's
    authority (clusters._original_destination: an HTTP port of a service with addresses), which resolves a short
    name through the outbound chain's set_filter_state (enabled only on routes to such clusters)."""
    return discovery(snapshot, svc) != "forward" and is_passthrough(policy) and authority_reaches(svc, port)


def authority_reaches(svc: Service, port: ServicePort) -> bool:
    """Whether an explicitly proxied request's authority can name where it goes: an HTTP port of a service with
    addresses (VIPs its virtual host matches), so a PASSTHROUGH cluster there forwards to the authority."""
    return names.is_http(port.protocol) and bool(svc.addresses)


def unique_ports(svc: Service) -> tuple[ServicePort, ...]:
    """A service's ports, the first of each number (invalid duplicates must not duplicate clusters)."""
    return svc.unique_ports


class ScopeEndpoints:
    """One outbound scope's assignments and what they were built from (Memos.endpoint_scopes): the snapshot's
    endpoint map, its visible services in order (and each one's position by host), where each service's
    assignments end in `assignments`, the same assignments packed by name, and the other inputs (the mesh and the
    DestinationRules)."""

    __slots__ = ("assignments", "endpoints", "ends", "others", "packed", "position", "services")

    def __init__(self, others: tuple[object, ...], services: list[Service], endpoints: EndpointMap,
                 ends: array[int], assignments: tuple[Prepacked, ...], packed: dict[str, AnyProto]) -> None:
        self.others, self.services, self.endpoints = others, services, endpoints
        self.ends, self.assignments, self.packed = ends, assignments, packed
        self.position = {svc.hostname: k for k, svc in enumerate(services)}


def _inputs(snapshot: MeshSnapshot) -> tuple[object, ...]:
    """Everything but the services and endpoints an outbound scope's assignments read (compared by identity): of the
    config, the DestinationRules only (subsets, locality load balancing, PASSTHROUGH; SnapshotIndex.destination_rule
    answers from them, the services and the mesh). All config kinds were compared: a VirtualService change (pushed
    as routes only) made the next endpoint change re-assemble every service of every scope."""
    return (snapshot.mesh, snapshot.mesh_config, snapshot.of_kind("DestinationRule"))


def _changed_hosts(memos: Memos, old: EndpointMap, new: EndpointMap) -> frozenset[str]:
    """The hosts with an endpoint tuple that is not the same object in both maps (found once per pair of maps and
    shared by every scope: snapshots keep the tuples of unchanged services)."""
    key = ("endpoints", id(old), id(new))
    hit: frozenset[str] | None = memos.changes.get(key, (old, new))
    if hit is not None:
        return hit
    get = old.get
    hosts = {k[0] for k, v in new.items() if get(k) is not v}
    hosts.update(k[0] for k in old if k not in new)
    out = frozenset(hosts)
    memos.changes.put(key, (old, new), out)
    return out


def build_endpoints(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos) -> dict[str, AnyProto]:
    """A ClusterLoadAssignment for every EDS cluster the proxy has (outbound default and subset clusters).

    A scope keeps what it was last built from: after an endpoint change only the services whose endpoints changed
    are assembled again, found from the hosts whose endpoint tuples changed (shared by the scopes) without walking
    the scope's services (without Sidecar scoping each of 25-50 namespaces walked all 1,000 services for a change
    of one). Returned packed, by name: the generator's general packing read each of the 3,500 assignments' names
    again in each scope per endpoint change."""
    okey = snapshot.index.outbound_key(proxy)
    others = _inputs(snapshot)
    visible = visible_services(snapshot, proxy)
    prev: ScopeEndpoints | None = memos.endpoint_scopes.get(okey)
    if prev is not None and not (same_objects(prev.others, others) and same_objects(prev.services, visible)):
        prev = None
    if prev is None:
        built = _build_scope(snapshot, proxy, memos, others, visible)
    elif prev.endpoints is snapshot.endpoints:
        built = prev
    else:
        built = _update_scope(snapshot, proxy, memos, prev,
                              _changed_hosts(memos, prev.endpoints, snapshot.endpoints))
    scopes = memos.endpoint_scopes
    scopes[okey] = built
    scopes.move_to_end(okey)
    if len(scopes) > memos.max_scopes:
        scopes.popitem(last=False)
    memos.endpoint_inserts += 1
    if memos.endpoint_inserts >= len(scopes) // 8 + 64:  # now and then (O(1) per insert): drop the scopes built
        memos.endpoint_inserts = 0  # from superseded config (never reusable; they pin old config and endpoints)
        for key in [key for key, v in scopes.items() if not same_objects(v.others, others)]:
            del scopes[key]
    return built.packed


def _packed(out: tuple[Prepacked, ...]) -> dict[str, AnyProto]:
    packed = {p.name: p.packed for p in out}
    if len(packed) != len(out):
        seen: set[str] = set()
        for p in out:
            if p.name in seen:
                raise GenerationError(f"duplicate ClusterLoadAssignment named {p.name!r}")
            seen.add(p.name)
    return packed


def _build_scope(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos, others: tuple[object, ...],
                 visible: list[Service]) -> ScopeEndpoints:
    out: list[Prepacked] = []
    ends = array("l")  # machine ints: a scope of 1,000 services holds no 1,000 int objects
    for svc in visible:
        out.extend(_service_assignments(snapshot, proxy, memos, svc))
        ends.append(len(out))
    assignments = tuple(out)
    return ScopeEndpoints(others, visible, snapshot.endpoints, ends, assignments, _packed(assignments))


def _update_scope(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos, prev: ScopeEndpoints,
                  hosts: frozenset[str]) -> ScopeEndpoints:
    """`prev` with the assignments of its services on `hosts` assembled again (the rest: the same objects)."""
    changed = sorted(k for k in map(prev.position.get, hosts) if k is not None)
    if not changed:
        return ScopeEndpoints(prev.others, prev.services, snapshot.endpoints, prev.ends, prev.assignments,
                              prev.packed)
    pieces: list[tuple[Prepacked, ...] | list[Prepacked]] = []
    packed: dict[str, AnyProto] | None = dict(prev.packed)  # in the assignments' order, as a fresh build has it
    ends = prev.ends
    at, sizes = 0, {}
    for k in changed:
        start, end = (ends[k - 1] if k else 0), ends[k]
        fresh = _service_assignments(snapshot, proxy, memos, prev.services[k])
        pieces.append(prev.assignments[at:start])
        pieces.append(fresh)
        at = end
        if packed is not None and [p.name for p in prev.assignments[start:end]] == [p.name for p in fresh]:
            for p in fresh:  # the same clusters: replaced in place, the order kept
                packed[p.name] = p.packed
        else:
            packed = None  # clusters came or went: packed again below
        sizes[k] = len(fresh)
    pieces.append(prev.assignments[at:])
    assignments = tuple(itertools.chain.from_iterable(pieces))
    if packed is None:
        packed = _packed(assignments)
    if any(size != ends[k] - (ends[k - 1] if k else 0) for k, size in sizes.items()):
        # a service's cluster count changed (resolution NONE: forwarding <-> EDS): where each one ends, again
        ends = array("l")
        for k in range(len(prev.services)):
            size = sizes.get(k, prev.ends[k] - (prev.ends[k - 1] if k else 0))
            ends.append((ends[-1] if ends else 0) + size)
    return ScopeEndpoints(prev.others, prev.services, snapshot.endpoints, ends, assignments, packed)


def _service_assignments(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos, svc: Service) -> list[Prepacked]:
    """The ClusterLoadAssignments of one visible service's EDS clusters (none if it is not discovered by EDS)."""
    out: list[Prepacked] = []
    if discovery(snapshot, svc) != "eds":
        return out
    subsets = subset_labels(snapshot, proxy.namespace, svc, proxy.labels)
    dr = destination_rule(snapshot, proxy.namespace, svc, proxy.labels)
    for port in unique_ports(svc):
        eps = snapshot.endpoints.get((svc.hostname, port.port), ())
        for subset, labels in subsets:
            if is_passthrough(effective_policy(dr, subset, port.port)):
                continue
            name = names.outbound_cluster(port.port, subset, svc.hostname)
            # locality LB makes an assignment depend on the proxy's locality (and failoverPriority labels)
            shape = locality_lb(snapshot, proxy, svc, dr, subset, port.port)
            key = (name, id(eps), tuple(sorted(labels.items())), shape)
            cla = memos.assignments.get(key, (eps,))
            if cla is None:
                chosen = select(eps, labels)
                msg = assignment(name, chosen) if shape is None else endpoint_pb2.ClusterLoadAssignment(
                    cluster_name=name, endpoints=shaped_endpoints(chosen, proxy, shape))
                cla = Prepacked.of(name, msg)
                memos.assignments.put(key, (eps,), cla)
            out.append(cla)
    return out
