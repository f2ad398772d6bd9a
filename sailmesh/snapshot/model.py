"""The immutable data the generators read: services, endpoints, config, and one proxy's view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from sailmesh.api.resource import Resource
from sailmesh.settings import MeshDefaults

Protocol = str  # Istio protocol names: HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UNKNOWN
EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class ServicePort:
    """One port of a service: the port clients dial and where endpoints listen (target_port)."""

    port: int
    name: str = ""
    protocol: Protocol = "TCP"
    target_port: int = 0  # 0 = same as port


@dataclass(frozen=True)
class Service:
    """A service as the mesh sees it, from a core Service or a ServiceEntry host."""

    hostname: str  # FQDN, e.g. reviews.default.svc.cluster.local (or the ServiceEntry host as written)
    name: str  # short name (the Service's metadata.name, or the ServiceEntry host)
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str] | None = None  # None = no selector (endpoints come from elsewhere)
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    resolution: Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"] = "STATIC"
    mesh_external: bool = False
    addresses: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ("*",)
    origin: str = ""  # "Service default/reviews", "ServiceEntry default/external-svc"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True)
class Workload:
    """One running instance (a "pod"): its address, labels and identity."""

    name: str
    namespace: str
    address: str
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    service_account: str = "default"
    # containerPort -> port the app really listens on (embedded mode: the sidecar owns containerPort)
    app_ports: Mapping[int, int] = field(default_factory=dict)
    locality: str = ""
    network: str = ""
    healthy: bool = True
    origin: str = ""  # "LocalWorkload default/reviews-v1", "WorkloadEntry default/vm-1"


@dataclass(frozen=True)
class Endpoint:
    """One address:port serving one port of one service."""

    service: str  # service hostname
    service_port: int
    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    service_account: str = "default"
    workload: str = ""  # "namespace/name" of the Workload, "" for DNS/static endpoints
    locality: str = ""
    weight: int = 1
    healthy: bool = True


@dataclass(frozen=True)
class MeshSnapshot:
    """Everything a push needs, immutable. Build with snapshot.build; never mutate."""

    version: int
    mesh: MeshDefaults
    # kind -> resources of that kind (valid ones only), sorted by (namespace, name)
    config: Mapping[str, tuple[Resource, ...]]
    services: Mapping[str, Service]  # hostname -> service
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]  # (hostname, service port) -> endpoints
    workloads: tuple[Workload, ...] = ()

    def of_kind(self, kind: str) -> tuple[Resource, ...]:
        return self.config.get(kind, ())


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

    @property
    def scope_key(self) -> tuple[object, ...]:
        """Proxies with equal scope keys get identical outbound config (cache key part)."""
        return (self.type, self.namespace, tuple(sorted(self.labels.items())))
