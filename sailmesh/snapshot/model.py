"""The immutable data the generators read: services, endpoints, config, and one proxy's view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from sailmesh.api.meshconfig import DEFAULT_MESH_CONFIG, MeshConfig
from sailmesh.api.resource import Resource

# The value types live in the registry layer (which builds them); the snapshot re-exports them.
from sailmesh.registry.model import EMPTY, NO_PORTS, Endpoint, Protocol, Service, ServicePort, Workload
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.index import SnapshotIndex

if TYPE_CHECKING:
    from sailmesh.registry.services import ServiceIndex

__all__ = [
    "EMPTY",
    "NO_PORTS",
    "Endpoint",
    "MeshSnapshot",
    "Protocol",
    "ProxyView",
    "Service",
    "ServicePort",
    "Workload",
]


@dataclass(frozen=True)
class MeshSnapshot:
    """Everything a push needs, immutable. Build with snapshot.build; never mutate."""

    version: int
    mesh: MeshDefaults
    # kind -> resources of that kind (valid ones only), oldest first: sorted by Istio's
    # (creationTimestamp, name, namespace), so "the oldest wins" is "the first wins"
    config: Mapping[str, tuple[Resource, ...]]
    services: Mapping[str, Service]  # hostname -> service
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]  # (hostname, service port) -> endpoints
    workloads: tuple[Workload, ...] = ()
    # Istio's MeshConfig (file <- ConfigMap istio in the root namespace); `mesh` holds the fields it overrides
    mesh_config: MeshConfig = DEFAULT_MESH_CONFIG
    # what mesh_config was built from: the process defaults and the mesh config file's mapping
    mesh_defaults: MeshDefaults = field(default_factory=MeshDefaults, compare=False, repr=False)
    mesh_file: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # jwksUri -> the key set the control plane fetched from it (registry.jwks); a URI not here has none yet
    jwks: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    # the registry's index of Service/ServiceEntry records this snapshot's services and endpoints came from
    # (snapshot.build reuses it while those resources are the same objects)
    service_index: ServiceIndex | None = field(default=None, compare=False, repr=False)
    # what each proxy can see (visible services, VirtualServices, DestinationRules), built with the snapshot
    index: SnapshotIndex = field(init=False, compare=False, repr=False)
    previous_index: InitVar[SnapshotIndex | None] = None

    def __post_init__(self, previous_index: SnapshotIndex | None) -> None:
        # the one write of construction: a frozen dataclass sets derived fields through object.__setattr__
        object.__setattr__(self, "index", SnapshotIndex(self.config, self.services, self.mesh, previous_index,
                                                          self.workloads))

    def of_kind(self, kind: str) -> tuple[Resource, ...]:
        return self.config.get(kind, ())


SCOPE_METADATA = ("INTERCEPTION_MODE", "DNS_CAPTURE", "DNS_AUTO_ALLOCATE")  # node metadata the config depends on


@dataclass(frozen=True)
class ProxyView:
    """Who a proxy is, as it told us in its xDS node (id + metadata)."""

    id: str  # Istio form: sidecar~127.0.1.2~reviews-v1-0.default~default.svc.cluster.local
    type: Literal["sidecar", "router"]
    ip: str
    namespace: str
    workload_name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    service_account: str = "default"
    app_ports: Mapping[int, int] = field(default_factory=dict)  # containerPort -> app port
    metadata: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # the node's string metadata (EnvoyFilter)
    istio_version: str = ""  # ISTIO_VERSION from the node metadata (EnvoyFilter proxyVersion)

    @cached_property
    def ip_mode(self) -> str:
        """Istio's GetIPMode: `IPv4`, `IPv6` or `Dual` from the proxy's addresses (node metadata INSTANCE_IPS, comma
        separated, as an agent in a dual-stack pod declares them, and its own address)."""
        ips = [self.ip, *(a.strip() for a in str(self.metadata.get("INSTANCE_IPS", "")).split(",") if a.strip())]
        v6 = {":" in a for a in ips}
        return "Dual" if v6 == {True, False} else "IPv6" if True in v6 else "IPv4"

    @cached_property
    def scope_key(self) -> tuple[object, ...]:
        """Proxies with equal scope keys get identical outbound config (cache key part); computed once. A declared
        interception mode and DNS auto-allocation are part of it (a captured sidecar's listeners and PassthroughCluster
        differ; auto-allocated VIPs add listeners), and so is an IP mode other than IPv4 (wildcards and sources)."""
        key = (self.type, self.namespace, tuple(sorted(self.labels.items())))
        extra = tuple(str(self.metadata.get(k, "")).upper() for k in SCOPE_METADATA)
        if self.ip_mode != "IPv4":
            extra = (*extra, self.ip_mode)
        return (*key, *extra) if any(extra) else key
