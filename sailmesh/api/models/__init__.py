"""Typed models of Istio kinds: `Resource.model` is the spec as a frozen msgspec Struct, built once per resource.

The stores build it when a validated resource enters (a spec that does not fit is refused there with a
ModelError); `build_model` is how, `model_of(resource, VirtualService)` is the typed way to read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from sailmesh.api.models import networking, security
from sailmesh.api.models.base import Duration, Model, Percent, build
from sailmesh.errors import ModelError

if TYPE_CHECKING:
    from sailmesh.api.resource import Resource

M = TypeVar("M", bound=Model)

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


def build_model(resource: Resource) -> Model | None:
    """The resource's spec as its typed model; None for kinds without one (core kinds: read `spec`)."""
    cls = MODELS.get(resource.kind)
    return None if cls is None else build(cls, resource.spec, str(resource.key))


def model_of(resource: Resource, cls: type[M]) -> M:
    """`resource.model`, typed as `cls`; ModelError if the resource is of another kind."""
    m = resource.model
    if not isinstance(m, cls):
        raise ModelError(str(resource.key), "", f"has no {cls.__name__} model")
    return m


__all__ = ["MODELS", "Duration", "Model", "ModelError", "Percent", "build_model", "model_of"]
