"""Locality load balancing as Istio applies it to a proxy's endpoints (pilot/pkg/networking/core/loadbalancer:
ApplyLocalityLoadBalancer, applyLocalityWeights, applyLocalityFailover, applyFailoverPriorities).

The setting is the DestinationRule's `loadBalancer.zoneAwareLbSetting`, else its `localityLbSetting` (after Istio's
port/subset merge), else the service's traffic distribution (Kubernetes `trafficDistribution: PreferClose`: Istio's
GetLocalityLbSetting turns it into failoverPriority labels with failover forced), else the mesh's `localityLbSetting`
(enabled when unset): Istio's GetEffectiveLbSetting.
Zone-aware (ZoneAwareLBSettings, unless `enabled: false`): endpoints get priorities whatever the outlier detection,
`failoverPriority` labels first, then by region only (the proxy's region, a `failover` target of it, any other), so
every zone of the proxy's region shares priority 0, where Envoy's zone-aware routing (the cluster's
`zone_aware_lb_config`) balances them. `distribute` reweights localities for proxies in its `from`
(the cluster then uses Envoy's locality-weighted LB); otherwise, only when the cluster has outlier detection
(without it Envoy never leaves priority 0), endpoints get priorities: `failoverPriority` labels first, then
region/zone/subzone proximity to the proxy with `failover` region pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sailmesh.api import locality as loc
from sailmesh.api.models.networking import PortTrafficPolicy
from sailmesh.registry.model import PREFER_SAME_NODE, PREFER_SAME_ZONE
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, Service

# Istio's GetLocalityLbSetting for a service's traffic distribution: failoverPriority labels, failover forced
TRAFFIC_DISTRIBUTION_LABELS = {
    PREFER_SAME_ZONE: (loc.NETWORK_LABEL, loc.REGION_LABEL, loc.ZONE_LABEL),
    PREFER_SAME_NODE: (loc.NETWORK_LABEL, loc.REGION_LABEL, loc.ZONE_LABEL, loc.SUBZONE_LABEL, loc.HOSTNAME_LABEL),
}


@dataclass(frozen=True)
class LocalitySetting:
    """Istio's LocalityLoadBalancerSetting, read from its YAML mapping."""

    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
    force_failover: bool = False  # priorities without outlier detection (a service's traffic distribution)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> LocalitySetting:
        dist = tuple((str(d.get("from") or ""), tuple((str(k), int(v)) for k, v in (d.get("to") or {}).items()))
                     for d in raw.get("distribute") or () if isinstance(d, Mapping))
        fail = tuple((str(f.get("from") or ""), str(f.get("to") or ""))
                     for f in raw.get("failover") or () if isinstance(f, Mapping))
        return cls(dist, fail, tuple(str(p) for p in raw.get("failoverPriority") or ()))


ENABLED = LocalitySetting()


@dataclass(frozen=True)
class ZoneAwareSetting:
    """Istio's ZoneAwareLoadBalancerSetting, read from its YAML mapping (`enabled` unset: on)."""

    enabled: bool = True
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
    min_cluster_size: int | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ZoneAwareSetting:
        base = LocalitySetting.of(raw)
        size = raw.get("minClusterSize")
        return cls(raw.get("enabled") is not False, base.failover,
                   base.failover_priority if raw.get("enabled") is not False else (),
                   int(size) if size is not None else None)

    distribute = ()  # (never: zone-aware has no distribute)


Setting = LocalitySetting | ZoneAwareSetting


def _enabled(raw: Mapping[str, Any]) -> bool:
    return raw.get("enabled") is not False


def setting(snapshot: MeshSnapshot, policy: PortTrafficPolicy, service: Service | None = None) -> Setting | None:
    """Istio's GetEffectiveLbSetting: the DestinationRule's zoneAwareLbSetting (even with `enabled: false`, which
    then turns Envoy's zone-aware routing off), else its localityLbSetting (None when it says `enabled: false`),
    else the service's traffic distribution (`traffic_distribution`), else the mesh's zoneAwareLbSetting, else the
    mesh's localityLbSetting (enabled unless it says otherwise)."""
    lb = policy.load_balancer
    if lb is not None and lb.zone_aware_lb_setting is not None:
        return ZoneAwareSetting.of(lb.zone_aware_lb_setting)
    raw = lb.locality_lb_setting if lb is not None else None
    if raw is not None:
        return LocalitySetting.of(raw) if _enabled(raw) else None
    if service is not None and service.traffic_distribution:
        return traffic_distribution(service.traffic_distribution)
    if snapshot.mesh_config.zone_aware_lb_setting is not None:
        return ZoneAwareSetting.of(snapshot.mesh_config.zone_aware_lb_setting)
    mesh = snapshot.mesh_config.locality_lb_setting
    if mesh is None:
        return ENABLED
    return LocalitySetting.of(mesh) if _enabled(mesh) else None


def traffic_distribution(value: str) -> LocalitySetting | None:
    """Istio's GetLocalityLbSetting for a service's traffic distribution: PreferClose / PreferSameZone prefer the
    proxy's network, region and zone in that order (Istio 1.27: the subzone no longer counts), PreferSameNode also
    its subzone and node (`kubernetes.io/hostname`); failover applies without outlier detection."""
    labels = TRAFFIC_DISTRIBUTION_LABELS.get(value)
    return LocalitySetting(failover_priority=labels, force_failover=True) if labels else None


@dataclass
class Group:
    """One LocalityLbEndpoints to be: a locality, its endpoints, its weight and priority."""

    locality: str
    endpoints: list[Endpoint]
    weight: int
    priority: int = 0


def groups(endpoints: Sequence[Endpoint]) -> list[Group]:
    """Endpoints by locality (sorted, stable), each group weighted by the sum of its endpoints' weights."""
    by: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by.setdefault(e.locality, []).append(e)
    out = []
    for name in sorted(by):
        members = sorted(by[name], key=lambda e: (e.address, e.port))
        out.append(Group(name, members, sum(max(1, e.weight) for e in members)))
    return out


def apply(gs: list[Group], proxy_locality: str, proxy_labels: Mapping[str, str], lb: Setting | None,
          failover_enabled: bool) -> list[Group]:
    """Istio's ApplyLocalityLoadBalancer (ApplyZoneAwareLoadBalancer for zone-aware settings) on the groups of one
    ClusterLoadAssignment (a proxy without a locality gets them as they are)."""
    if lb is None or not proxy_locality:
        return gs
    if isinstance(lb, ZoneAwareSetting):
        if not lb.enabled:
            return gs
        if lb.failover_priority:
            gs = _failover_priority(gs, proxy_locality, proxy_labels, lb.failover_priority)
        return _regions(gs, proxy_locality, lb.failover)
    if lb.distribute:
        return _distribute(gs, proxy_locality, lb.distribute)
    if not (failover_enabled or lb.force_failover):
        return gs
    if lb.failover_priority:
        gs = _failover_priority(gs, proxy_locality, proxy_labels, lb.failover_priority)
        return _failover(gs, proxy_locality, lb.failover) if lb.failover else gs
    return _failover(gs, proxy_locality, lb.failover)


def _distribute(gs: list[Group], proxy_locality: str,
                rules: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]) -> list[Group]:
    """applyLocalityWeights: the first rule whose `from` matches the proxy reweights the localities its `to`
    names (a weight shared by the groups a wildcard matches, in proportion to theirs); other groups get no
    endpoints."""
    for source, targets in rules:
        if not loc.matches(proxy_locality, source):
            continue
        unmatched = set(range(len(gs)))
        for target, weight in targets:
            chosen = {i: gs[i].weight for i in sorted(unmatched) if loc.matches(gs[i].locality, target)}
            unmatched -= set(chosen)
            total = sum(chosen.values())
            for i, original in chosen.items():
                share = original * weight / total if total else 0
                if share > 0:
                    gs[i].weight = math.ceil(share)
        return [g for i, g in enumerate(gs) if i not in unmatched]
    return gs


def _renumber(gs: list[Group]) -> list[Group]:
    """Priorities 0..N without gaps, in the order of the computed ones (Envoy wants them contiguous)."""
    order = {p: i for i, p in enumerate(sorted({g.priority for g in gs}))}
    for g in gs:
        g.priority = order[g.priority]
    return gs


def _failover(gs: list[Group], proxy_locality: str, pairs: tuple[tuple[str, str], ...]) -> list[Group]:
    """applyLocalityFailover: proximity priority (0 same subzone .. 3 another region; 4 for a region the proxy's
    region does not fail over to when a `failover` pair names its region), after any failoverPriority ones."""
    region = loc.split(proxy_locality)[0]
    for g in gs:
        p = loc.lb_priority(proxy_locality, g.locality)
        if p == 3:
            for source, target in pairs:
                if source == region:
                    if loc.split(g.locality)[0] != target:
                        p = 4
                    break
        g.priority = g.priority * 5 + p
    return _renumber(gs)


def _regions(gs: list[Group], proxy_locality: str, pairs: tuple[tuple[str, str], ...]) -> list[Group]:
    """applyZoneAwareRegionalFailover: by region only, 0 the proxy's, 1 the `failover` target of the first pair
    from it, 2 any other, after any failoverPriority ones."""
    region = loc.split(proxy_locality)[0]
    for g in gs:
        theirs = loc.split(g.locality)[0]
        p = 0 if theirs == region else 2
        if p:
            for source, target in pairs:
                if source == region:
                    p = 1 if theirs == target else 2
                    break
        g.priority = g.priority * 3 + p
    return _renumber(gs)


def _label(labels: Mapping[str, str], locality: str, key: str, network: str = "") -> str:
    """An endpoint's or proxy's label, with the labels Istio adds (AugmentLabels): the topology ones for its
    locality, the network one for its network when it has no such label; a missing label reads "" (Go's map
    lookup)."""
    value = labels.get(key)
    if value is None and key in loc.TOPOLOGY_LABELS:
        value = loc.topology_labels(locality).get(key)
    elif not value and key == loc.NETWORK_LABEL:
        value = network
    return value or ""


def _failover_priority(gs: list[Group], proxy_locality: str, proxy_labels: Mapping[str, str],
                       labels: tuple[str, ...]) -> list[Group]:
    """applyFailoverPriorities: within each locality, endpoints split by how many of the listed labels (in order)
    they share with the proxy (`key=value` entries compare with that value instead of the proxy's). A bare
    `topology.istio.io/network` first is preferred, not required (Istio 1.31, #60829): an endpoint on another
    network ranks by the other labels too, behind every endpoint on the proxy's network (N added to its rank)."""
    if not proxy_labels:
        return gs
    names: list[str] = []
    overrides: dict[str, str] = {}
    for item in labels:
        name, sep, value = item.partition("=")
        names.append(name)
        if sep:
            overrides[name] = value
    lowest = len(names)
    network_first = bool(labels) and labels[0] == loc.NETWORK_LABEL
    out: list[Group] = []
    for g in gs:
        by: dict[int, list[Endpoint]] = {}
        for e in g.endpoints:
            prio = adjust = 0
            for j, name in enumerate(names):
                want = overrides.get(name, _label(proxy_labels, proxy_locality, name))
                if want != _label(e.labels, e.locality, name, e.network):
                    if j == 0 and network_first:
                        adjust = lowest
                        continue
                    prio = lowest - j
                    break
            by.setdefault(prio + adjust, []).append(e)
        for prio in sorted(by):
            members = by[prio]
            out.append(Group(g.locality, members, sum(max(1, e.weight) for e in members), prio))
    return _renumber(out)
