"""Service, port, workload and endpoint value types (re-exported by snapshot.model, which generators read)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Literal

Protocol = str  # Istio protocol names: HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, MONGO, REDIS, MYSQL, UNKNOWN
EMPTY: Mapping[str, str] = MappingProxyType({})
# Istio's pod label, set by sidecar injection: the workload's sidecar holds a mesh certificate and speaks Istio
# mTLS. Endpoints carry it for auto mTLS; a proxy's own labels carry it when it can present a certificate.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_ISTIO = "istio"
NO_PORTS: Mapping[str, int] = MappingProxyType({})
PREFER_SAME_ZONE = "PreferSameZone"  # Kubernetes' PreferClose is its older name
PREFER_SAME_NODE = "PreferSameNode"


@dataclass(frozen=True)
class ServicePort:
    """One port of a service: the port clients dial and where endpoints listen (target_port)."""

    port: int
    name: str = ""
    protocol: Protocol = "TCP"
    target_port: int = 0  # 0 = same as port
    target_port_name: str = ""  # a named targetPort (resolved per workload through Workload.ports)


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
    # Istio's TrafficDistribution (Service spec.trafficDistribution, else the networking.istio.io/traffic-distribution
    # annotation): PREFER_SAME_ZONE or PREFER_SAME_NODE prioritize endpoints by locality (generate/locality.py), "" none
    traffic_distribution: str = ""

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)

    @cached_property
    def unique_ports(self) -> tuple[ServicePort, ...]:
        """The ports, the first of each number (invalid duplicates must not duplicate clusters); computed once."""
        seen: dict[int, ServicePort] = {}
        for p in self.ports:
            seen.setdefault(p.port, p)
        return tuple(seen.values())


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
    # Named ports: container port name -> containerPort (pods, local workloads), or a WorkloadEntry's
    # `ports` map (service port name -> port on this workload).
    ports: Mapping[str, int] = field(default_factory=lambda: NO_PORTS)
    weight: int = 1  # WorkloadEntry weight (load-balancing weight of its endpoints)
    # "namespace/name" of the one Service this workload serves, chosen by name, not by selector: a Kubernetes
    # EndpointSlice endpoint without a Pod (its `ports` map is keyed by service port name). "" for all others.
    service: str = ""
    # a Kubernetes pod's DNS name parts (spec.hostname, default the pod name, and spec.subdomain): a headless
    # Service's name table holds `<hostname>.<subdomain>.<ns>.svc.<domain>` for it (Istio's BuildNameTable)
    hostname: str = ""
    subdomain: str = ""


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
    network: str = ""
