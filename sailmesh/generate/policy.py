"""DestinationRule trafficPolicy resolution: port-level settings and subset overrides, as Istio merges them."""

from __future__ import annotations

from typing import Any

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule, PortTrafficPolicy, TrafficPolicy
from sailmesh.api.resource import Resource

# The parts of a TrafficPolicy that port-level settings and subsets replace as a whole.
COMPONENTS = ("load_balancer", "connection_pool", "outlier_detection", "tls")
# TrafficPolicy fields with no port-level form: port-level settings keep them, a subset's replace them
POLICY_LEVEL = ("retry_budget", "proxy_protocol")
NO_POLICY = PortTrafficPolicy()


def _port_components(policy: TrafficPolicy | None, port: int) -> dict[str, Any]:
    """Top-level components of a policy, each replaced by the portLevelSettings entry for `port`."""
    if policy is None:
        return {}
    out = {k: v for k in COMPONENTS if (v := getattr(policy, k)) is not None}
    for pls in policy.port_level_settings or ():
        if pls.port is not None and pls.port.number == port:
            out.update({k: v for k in COMPONENTS if (v := getattr(pls, k)) is not None})
    for key in POLICY_LEVEL:  # policy-level fields only; a subset's replaces it (MergeTrafficPolicy)
        if (value := getattr(policy, key)) is not None:
            out[key] = value
    return out


def effective_policy(dr: Resource | None, subset: str, port: int) -> PortTrafficPolicy:
    """Istio's MergeTrafficPolicy: the DR's policy for this port, overridden per component by the subset's."""
    if dr is None:
        return NO_POLICY
    rule = model_of(dr, DestinationRule)
    merged = _port_components(rule.traffic_policy, port)
    sub = rule.subset(subset) if subset else None
    if sub is not None:
        merged.update(_port_components(sub.traffic_policy, port))
    return PortTrafficPolicy(**merged) if merged else NO_POLICY
