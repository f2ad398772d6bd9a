"""DestinationRule trafficPolicy resolution: port-level settings and subset overrides, as Istio merges them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sailmesh.api.resource import Resource
from sailmesh.generate.scope import subset_of

# The parts of a TrafficPolicy that port-level settings and subsets replace as a whole.
COMPONENTS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")


def _port_components(policy: Mapping[str, Any] | None, port: int) -> dict[str, Any]:
    """Top-level components of a policy, each replaced by the portLevelSettings entry for `port`."""
    if not isinstance(policy, Mapping):
        return {}
    out = {k: policy[k] for k in COMPONENTS if policy.get(k) is not None}
    for pls in policy.get("portLevelSettings") or []:
        if not isinstance(pls, Mapping):
            continue
        number = (pls.get("port") or {}).get("number")
        if number == port:
            out.update({k: pls[k] for k in COMPONENTS if pls.get(k) is not None})
    return out


def effective_policy(dr: Resource | None, subset: str, port: int) -> dict[str, Any]:
    """Istio's MergeTrafficPolicy: the DR's policy for this port, overridden per component by the subset's."""
    if dr is None:
        return {}
    merged = _port_components(dr.spec.get("trafficPolicy"), port)
    sub = subset_of(dr, subset)
    if sub is not None:
        merged.update(_port_components(sub.get("trafficPolicy"), port))
    return merged
