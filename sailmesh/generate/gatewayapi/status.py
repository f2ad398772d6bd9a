"""Gateway API status as Istio writes it: conditions (Accepted, Programmed, ResolvedRefs) and route parents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sailmesh.api.resource import Resource
    from sailmesh.generate.gatewayapi.rules import RefProblem

Status = dict[str, Any]
CONTROLLER_NAME = "istio.io/gateway-controller"


def condition(kind: str, ok: bool, reason: str, message: str, generation: int = 0) -> dict[str, Any]:
    """One metav1.Condition (lastTransitionTime is left out: the control plane keeps no history)."""
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation}


def route_parent_status(ref: Mapping[str, Any], accepted: bool, reason: str, message: str,
                        problems: list[RefProblem], route: Resource) -> dict[str, Any]:
    """A route's status for one parentRef: Accepted (attachment only, as the Gateway API asks) and ResolvedRefs
    (its backends: BackendNotFound, RefNotPermitted, InvalidKind with Istio's messages)."""
    resolved = condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved", route.generation)
    if problems:
        resolved = condition("ResolvedRefs", False, problems[0].reason,
                             "; ".join(dict.fromkeys(p.message for p in problems)), route.generation)
    return {"parentRef": dict(ref), "controllerName": CONTROLLER_NAME,
            "conditions": [condition("Accepted", accepted, reason, message, route.generation), resolved]}
