"""Typed models of Istio kinds: `typed(resource)` returns the spec as a frozen dataclass."""

from __future__ import annotations

from sailmesh.api.models import networking, security
from sailmesh.api.models.base import Duration, Model, Percent
from sailmesh.api.resource import Resource

MODELS: dict[str, type[Model]] = {
    "VirtualService": networking.VirtualService,
    "DestinationRule": networking.DestinationRule,
    "Gateway": networking.Gateway,
    "ServiceEntry": networking.ServiceEntry,
    "Sidecar": networking.Sidecar,
    "WorkloadEntry": networking.WorkloadEntry,
    "WorkloadGroup": networking.WorkloadGroup,
    "PeerAuthentication": security.PeerAuthentication,
    "AuthorizationPolicy": security.AuthorizationPolicy,
    "RequestAuthentication": security.RequestAuthentication,
}


def typed(resource: Resource) -> Model:
    """The resource's spec as its typed model; KeyError for kinds without a model (read `spec` instead)."""
    model = MODELS[resource.kind]
    spec = resource.spec if isinstance(resource.spec, dict) else {}
    return model.from_dict(spec)


__all__ = ["MODELS", "Duration", "Model", "Percent", "typed"]
