"""PeerAuthentication: the mTLS mode a workload (and each of its ports) accepts, with Istio's precedence.

Istio's rules (pilot/pkg/model/authentication.go, composePeerAuthentication and GetNamespaceMutualTLSMode):
- a policy without a selector (or with empty matchLabels) is mesh-level in the root namespace, namespace-level
  elsewhere; one with a selector is workload-level, and only outside the root namespace (a selector in the root
  namespace is ignored);
- the narrowest scope wins: workload over namespace over mesh; among equals the oldest wins (snapshot config is
  sorted oldest first, so the first one wins);
- UNSET (or no `mtls`) inherits from the wider scope; with no policy at all the mode is PERMISSIVE;
- `portLevelMtls` counts only on the workload-level policy (Istio's validation rejects it without a selector);
  an UNSET port inherits the workload's resolved mode. Port keys are workload (target) ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sailmesh.api.models import model_of
from sailmesh.api.models.security import MutualTLS, PeerAuthentication
from sailmesh.api.resource import Resource
from sailmesh.snapshot.model import MeshSnapshot

KIND = "PeerAuthentication"
STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"
UNSET = "UNSET"
MODES = (STRICT, PERMISSIVE, DISABLE)
NO_PORTS: Mapping[int, str] = MappingProxyType({})


@dataclass(frozen=True)
class MergedPeerAuthentication:
    """The effective mode of one workload, and its port-level overrides (workload port -> mode)."""

    mode: str = PERMISSIVE
    per_port: Mapping[int, str] = field(default_factory=lambda: NO_PORTS)
    # "ns/name" of the policies that decided it, narrowest last (for debugging and config dumps)
    sources: tuple[str, ...] = ()

    def for_port(self, port: int) -> str:
        """The mode on one workload port: its port-level mode, else the workload's."""
        return self.per_port.get(port, self.mode)


def _mode(mtls: MutualTLS | None) -> str | None:
    """The policy's mode, None for UNSET (or absent): inherit."""
    mode = (mtls.mode if mtls is not None else None) or UNSET
    return mode if mode in MODES else None


def _has_selector(spec: PeerAuthentication) -> bool:
    return spec.selector is not None and bool(spec.selector.match_labels)


def _scoped(snapshot: MeshSnapshot, namespace: str) -> tuple[Resource | None, Resource | None]:
    """The oldest mesh-level and namespace-level policies that apply to `namespace`."""
    root = snapshot.mesh.root_namespace
    mesh: Resource | None = None
    ns_level: Resource | None = None
    for res in snapshot.of_kind(KIND):
        if res.namespace not in (root, namespace) or _has_selector(model_of(res, PeerAuthentication)):
            continue
        if res.namespace == root:
            mesh = mesh or res
        else:
            ns_level = ns_level or res
    return mesh, ns_level


def namespace_mode(snapshot: MeshSnapshot, namespace: str) -> str | None:
    """Istio's GetNamespaceMutualTLSMode: the namespace-level mode, else the mesh-level one; None if neither
    says (the client side's hint for auto mTLS, which ignores workload and port policies)."""
    mesh, ns_level = _scoped(snapshot, namespace)
    for res in (ns_level, mesh):
        if res is not None and (mode := _mode(model_of(res, PeerAuthentication).mtls)) is not None:
            return mode
    return None


def workload_policy(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> MergedPeerAuthentication:
    """Istio's composePeerAuthentication for a workload in `namespace` with `labels`."""
    mesh, ns_level = _scoped(snapshot, namespace)
    workload: Resource | None = None
    if namespace != snapshot.mesh.root_namespace:
        for res in snapshot.of_kind(KIND):
            if res.namespace != namespace:
                continue
            spec = model_of(res, PeerAuthentication)
            if not _has_selector(spec):
                continue
            sel = spec.selector.match_labels if spec.selector is not None else None
            if sel and all(labels.get(k) == v for k, v in sel.items()):
                workload = res  # the oldest matching one (config is oldest first)
                break
    mode = PERMISSIVE
    sources: list[str] = []
    for scoped in (mesh, ns_level):
        if scoped is not None and (m := _mode(model_of(scoped, PeerAuthentication).mtls)) is not None:
            mode = m
            sources.append(f"{scoped.namespace}/{scoped.name}")
    if workload is None:
        return MergedPeerAuthentication(mode, NO_PORTS, tuple(sources))
    spec = model_of(workload, PeerAuthentication)
    if (m := _mode(spec.mtls)) is not None:
        mode = m
    sources.append(f"{workload.namespace}/{workload.name}")
    per_port: dict[int, str] = {}
    for key, mtls in (spec.port_level_mtls or {}).items():
        try:
            port = int(key)
        except ValueError:
            continue  # validation reports it; a port that is not a number selects nothing
        per_port[port] = _mode(mtls) or mode
    return MergedPeerAuthentication(mode, MappingProxyType(per_port) if per_port else NO_PORTS, tuple(sources))
