"""Services from core Service and ServiceEntry resources, with where their endpoints come from."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import ServiceEntry
from sailmesh.api.resource import Resource
from sailmesh.errors import ModelError
from sailmesh.registry import protocol
from sailmesh.registry.model import PREFER_SAME_NODE, PREFER_SAME_ZONE, Service, ServicePort, Workload
from sailmesh.registry.workloads import workload_from_spec
from sailmesh.settings import MeshDefaults

log = logging.getLogger(__name__)

EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
TRAFFIC_DISTRIBUTION_ANNOTATION = "networking.istio.io/traffic-distribution"
Resolution = Literal["STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE"]
_RESOLUTIONS: tuple[Resolution, ...] = ("STATIC", "DNS", "DNS_ROUND_ROBIN", "NONE")


@dataclass(frozen=True)
class ServiceRecord:
    """A service plus what its endpoints are made of (selector, inline endpoints, or its own DNS name)."""

    service: Service
    kind: Literal["Service", "ServiceEntry"]
    # ServiceEntry `endpoints` (as workloads whose `ports` map is keyed by service port name)
    inline: tuple[Workload, ...] = ()
    # DNS services without endpoints: Envoy resolves this name (the host itself, or a Service's externalName)
    dns_name: str = ""


@dataclass
class ServiceIndex:
    """Every service by hostname, the records endpoints are computed from, and hostname conflicts."""

    records: list[ServiceRecord] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def services(self) -> Mapping[str, Service]:
        return MappingProxyType({r.service.hostname: r.service for r in self.records})


def hostname(name: str, namespace: str, mesh: MeshDefaults) -> str:
    """A Kubernetes Service's FQDN: <name>.<namespace>.svc.<domain suffix>."""
    return f"{name}.{namespace}.svc.{mesh.domain_suffix}"


def _port_number(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _export_to(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",")]
    out = tuple(str(v) for v in _list(values) if str(v))
    return out or ("*",)


def _list(value: Any) -> list[Any]:
    """A YAML list, or [] for anything else (stores may hold unvalidated config: never iterate a string)."""
    return value if isinstance(value, list) else []


def traffic_distribution(spec_value: Any, annotations: Mapping[str, str]) -> str:
    """Istio's GetTrafficDistribution: a Service's `spec.trafficDistribution` (PreferClose and PreferSameZone are one
    value, PreferSameNode another), else the `networking.istio.io/traffic-distribution` annotation (the same values,
    any case); "" for none or a value Istio does not know."""
    if spec_value in ("PreferClose", PREFER_SAME_ZONE):
        return PREFER_SAME_ZONE
    if spec_value == PREFER_SAME_NODE:
        return PREFER_SAME_NODE
    note = str(annotations.get(TRAFFIC_DISTRIBUTION_ANNOTATION) or "").lower()
    if note in ("preferclose", PREFER_SAME_ZONE.lower()):
        return PREFER_SAME_ZONE
    return PREFER_SAME_NODE if note == PREFER_SAME_NODE.lower() else ""


def _spec(r: Resource) -> Mapping[str, Any]:
    return r.spec if isinstance(r.spec, Mapping) else {}


def _frozen(m: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in m.items()}) if isinstance(m, Mapping) else MappingProxyType({})


def service_from_kube(r: Resource, mesh: MeshDefaults) -> ServiceRecord:
    """A core Service: FQDN, ports with Istio's protocol inference, targetPort (number or name), selector."""
    spec = _spec(r)
    ports: list[ServicePort] = []
    for p in _list(spec.get("ports")):
        if not isinstance(p, Mapping):
            continue
        number = _port_number(p.get("port"))
        if not 0 < number < 65536:
            continue
        name = str(p.get("name") or "")
        target = p.get("targetPort")
        target_number = _port_number(target)
        target_name = target if isinstance(target, str) and target and not target.isdigit() else ""
        proto = protocol.infer(number, name, p.get("appProtocol"), str(p.get("protocol") or "TCP"))
        ports.append(ServicePort(number, name, proto, target_number, target_name))
    selector = _frozen(spec.get("selector")) or None  # Kubernetes: an empty selector is no selector
    cluster_ip = str(spec.get("clusterIP") or "")
    ips = [str(a) for a in _list(spec.get("clusterIPs")) if a and a != "None"]
    addresses = tuple(dict.fromkeys(([cluster_ip] if cluster_ip and cluster_ip != "None" else []) + ips))
    resolution: Resolution = "STATIC"
    external = False
    dns_name = ""
    if spec.get("type") == "ExternalName" and spec.get("externalName"):
        # Istio: an ExternalName Service is a DNS service outside the mesh, resolving externalName.
        resolution, external, dns_name, selector = "DNS", True, str(spec["externalName"]), None
    elif cluster_ip == "None":
        resolution = "NONE"  # headless: Istio's Passthrough (connect to the address the client asked for)
    svc = Service(
        hostname=hostname(r.name, r.namespace, mesh),
        name=r.name,
        namespace=r.namespace,
        ports=tuple(ports),
        selector=selector,
        labels=_frozen(r.labels),
        resolution=resolution,
        mesh_external=external,
        addresses=addresses,
        export_to=_export_to(r.annotations.get(EXPORT_TO_ANNOTATION)),
        origin=f"Service {r.namespace}/{r.name}",
        traffic_distribution=traffic_distribution(spec.get("trafficDistribution"), r.annotations),
    )
    return ServiceRecord(svc, "Service", dns_name=dns_name)


def _entry(r: Resource) -> ServiceEntry | None:
    """The ServiceEntry's typed spec; None (logged) when it does not fit, which only config that bypassed a store
    can do: the stores refuse such specs."""
    try:
        return model_of(r, ServiceEntry)
    except ModelError as e:
        log.warning("ignored: %s", e)
        return None


def services_from_entry(r: Resource) -> list[ServiceRecord]:
    """A ServiceEntry: one service per host, sharing ports, resolution, location, addresses and endpoints."""
    entry = _entry(r)
    if entry is None:
        return []
    ports: list[ServicePort] = []
    for p in entry.ports or ():
        number = p.number or 0
        if not 0 < number < 65536:
            continue
        # Istio converts ServiceEntry ports with protocol.Parse(port.protocol): no name inference.
        proto = protocol.parse(p.protocol or "")
        ports.append(ServicePort(number, p.name or "", proto, p.target_port or 0))
    resolution_raw = (entry.resolution or "NONE").upper()
    resolution: Resolution = next((x for x in _RESOLUTIONS if x == resolution_raw), "NONE")
    external = (entry.location or "MESH_EXTERNAL").upper() != "MESH_INTERNAL"
    ws = entry.workload_selector
    selector = _frozen(ws.labels) if ws is not None else None
    origin = f"ServiceEntry {r.namespace}/{r.name}"
    inline = tuple(
        workload_from_spec(f"{r.name}-endpoint-{i}", r.namespace, e, origin)
        for i, e in enumerate(entry.endpoints or ())
        if e.address
    )
    distribution = traffic_distribution(None, r.annotations)  # a ServiceEntry: the annotation only (Istio)
    out = []
    for host in entry.hosts or ():
        svc = Service(
            hostname=host,
            name=host,
            namespace=r.namespace,
            ports=tuple(ports),
            selector=selector or None,
            labels=_frozen(r.labels),
            resolution=resolution,
            mesh_external=external,
            addresses=tuple(entry.addresses or ()),
            export_to=tuple(v for v in entry.export_to or () if v) or ("*",),
            origin=origin,
            traffic_distribution=distribution,
        )
        dns = host if resolution in ("DNS", "DNS_ROUND_ROBIN") and not inline and not selector else ""
        out.append(ServiceRecord(svc, "ServiceEntry", inline=inline, dns_name="" if dns.startswith("*") else dns))
    return out


def build_index(resources: Iterable[Resource], mesh: MeshDefaults) -> ServiceIndex:
    """Services from core Services then ServiceEntries (each oldest first); the first definition of a host wins."""
    index = ServiceIndex()
    owner: dict[str, str] = {}
    items = list(resources)
    records: list[ServiceRecord] = [service_from_kube(r, mesh) for r in items if r.kind == "Service"]
    for r in items:
        if r.kind == "ServiceEntry":
            records.extend(services_from_entry(r))
    for rec in records:
        host = rec.service.hostname
        if host in owner:
            msg = f"host {host} of {rec.service.origin} is already defined by {owner[host]}; ignored"
            index.conflicts.append(msg)
            log.info("%s", msg)
            continue
        owner[host] = rec.service.origin
        index.records.append(rec)
    return index
