"""Istio's locality rules: `region/zone/subzone` from a workload's field or labels, the labels Istio adds for it,
and matching a locality against a rule's (`*` wildcards), as pkg/util/label and pilot's util.LocalityMatch."""

from __future__ import annotations

from collections.abc import Mapping

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
ISTIO_LOCALITY_LABEL = "istio-locality"  # region.zone.subzone (dots: label values cannot hold slashes)
TOPOLOGY_LABELS = (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)
NETWORK_LABEL = "topology.istio.io/network"
HOSTNAME_LABEL = "kubernetes.io/hostname"  # the node (Istio adds it for a pod's node)


def split(locality: str) -> tuple[str, str, str]:
    """`region/zone/subzone` -> its three parts (missing ones empty)."""
    region, _, rest = locality.partition("/")
    zone, _, subzone = rest.partition("/")
    return region, zone, subzone


def join(region: str, zone: str = "", subzone: str = "") -> str:
    """The parts as `region/zone/subzone`, trailing empty parts dropped ("" when there is no region)."""
    parts = [region, zone, subzone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def from_labels(labels: Mapping[str, str]) -> str:
    """A workload's locality from its labels: Istio's `istio-locality` (region.zone.subzone) first, else the
    topology labels (topology.kubernetes.io/region and /zone, topology.istio.io/subzone)."""
    explicit = str(labels.get(ISTIO_LOCALITY_LABEL) or "")
    if explicit:
        return join(*split(explicit.replace(".", "/")))
    return join(*(str(labels.get(k) or "") for k in TOPOLOGY_LABELS))


def of_workload(locality: str, labels: Mapping[str, str]) -> str:
    """The locality field (LocalWorkload, WorkloadEntry) when set, else the labels' (`from_labels`)."""
    return locality or from_labels(labels)


def topology_labels(locality: str) -> dict[str, str]:
    """The labels Istio adds to a proxy's (and its endpoints') labels for its locality (model.AugmentLabels)."""
    return {k: v for k, v in zip(TOPOLOGY_LABELS, split(locality), strict=True) if v}


def matches(locality: str, rule: str) -> bool:
    """Istio's util.LocalityMatch: the rule's region (or `*`) and, where given, zone and subzone (or `*`)."""
    region, zone, subzone = split(locality)
    r_region, r_zone, r_subzone = split(rule)
    return (r_region == "*" or region == r_region) and (r_zone in ("", "*") or zone == r_zone) \
        and (r_subzone in ("", "*") or subzone == r_subzone)


def lb_priority(proxy: str, endpoint: str) -> int:
    """Istio's util.LbPriority: 0 same subzone, 1 same zone, 2 same region, 3 another region."""
    p, e = split(proxy), split(endpoint)
    if p[0] != e[0]:
        return 3
    if p[1] != e[1]:
        return 2
    return 0 if p[2] == e[2] else 1
