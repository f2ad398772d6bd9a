"""Endpoints per (service hostname, service port): selected workloads, ServiceEntry endpoints, DNS names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from sailmesh.api.hosts import selector_matches
from sailmesh.registry.model import Endpoint, ServicePort, Workload
from sailmesh.registry.services import ServiceRecord
from sailmesh.registry.workloads import is_entry

EndpointMap = Mapping[tuple[str, int], tuple[Endpoint, ...]]


class WorkloadIndex:
    """Workloads by namespace and by (namespace, label, value), for fast selector matching."""

    def __init__(self, workloads: Iterable[Workload]) -> None:
        self.by_ns: dict[str, list[Workload]] = defaultdict(list)
        self.by_label: dict[tuple[str, str, str], list[Workload]] = defaultdict(list)
        self.by_service: dict[str, list[Workload]] = defaultdict(list)  # Workload.service -> its workloads
        for w in workloads:
            if w.service:
                self.by_service[w.service].append(w)
            self.by_ns[w.namespace].append(w)
            for k, v in w.labels.items():
                self.by_label[(w.namespace, k, v)].append(w)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[Workload]:
        """Workloads of the namespace whose labels include every selector label (empty selector: none)."""
        if not selector:
            return []
        lists = [self.by_label.get((namespace, k, v), []) for k, v in selector.items()]
        smallest = min(lists, key=len)
        return [w for w in smallest if all(w.labels.get(k) == v for k, v in selector.items())]


def target_port(workload: Workload, port: ServicePort) -> int | None:
    """Where this workload serves the service port, or None when it does not serve it.

    - a named targetPort is looked up in the workload's named ports (Kubernetes: pods without it are skipped);
    - a WorkloadEntry (or ServiceEntry endpoint) `ports` map is keyed by the service port name (Istio);
    - else the numeric targetPort, else the service port number.
    """
    if workload.service:  # an EndpointSlice endpoint: the slice's port of the same name as the service port
        return workload.ports.get(port.name)
    if port.target_port_name:
        return workload.ports.get(port.target_port_name)
    if is_entry(workload) or workload.origin.startswith("ServiceEntry "):
        mapped = workload.ports.get(port.name) if port.name else None
        if mapped:
            return mapped
    return port.target_port or port.port


def _endpoint(host: str, port: ServicePort, w: Workload, number: int, with_workload: bool) -> Endpoint:
    return Endpoint(
        service=host,
        service_port=port.port,
        address=w.address,
        port=number,
        labels=w.labels,
        service_account=w.service_account,
        workload=f"{w.namespace}/{w.name}" if with_workload else "",
        locality=w.locality,
        weight=w.weight,
        healthy=w.healthy,
        network=w.network,
    )


def endpoints_of(record: ServiceRecord, index: WorkloadIndex) -> dict[tuple[str, int], tuple[Endpoint, ...]]:
    """The endpoints of one service, per service port, in a stable order (address, port, workload)."""
    svc = record.service
    selected = index.select(svc.namespace, svc.selector) if svc.selector else []
    if record.kind == "Service":
        selected = selected + index.by_service.get(f"{svc.namespace}/{svc.name}", [])
    out: dict[tuple[str, int], tuple[Endpoint, ...]] = {}
    for port in svc.ports:
        eps: list[Endpoint] = []
        for w in selected:
            number = target_port(w, port)
            if number:
                eps.append(_endpoint(svc.hostname, port, w, number, True))
        for w in record.inline:
            number = target_port(w, port)
            if number:
                eps.append(_endpoint(svc.hostname, port, w, number, False))
        if record.dns_name and not eps:
            # A DNS service without endpoints: Envoy resolves the name itself (Istio's STRICT_DNS cluster).
            number = port.port if record.kind == "Service" else (port.target_port or port.port)
            eps.append(Endpoint(service=svc.hostname, service_port=port.port, address=record.dns_name, port=number))
        eps.sort(key=lambda e: (e.address, e.port, e.workload))
        out[(svc.hostname, port.port)] = tuple(eps)
    return out


def compute(records: Iterable[ServiceRecord], workloads: Iterable[Workload]) -> EndpointMap:
    """Endpoints of every service port (ports with no endpoint map to an empty tuple)."""
    index = WorkloadIndex(workloads)
    out: dict[tuple[str, int], tuple[Endpoint, ...]] = {}
    for rec in records:
        out.update(endpoints_of(rec, index))
    return MappingProxyType(out)


def _same(a: Workload | None, b: Workload | None) -> bool:
    return a is b or a == b


def update(
    previous: EndpointMap,
    records: Sequence[ServiceRecord],
    old_workloads: Iterable[Workload],
    new_workloads: Sequence[Workload],
) -> EndpointMap:
    """Endpoints after a workload-only change: recompute just the services whose selector matches a workload
    that appeared, disappeared or changed (its old or new labels). Equal to compute(records, new_workloads)."""
    old_by = {(w.namespace, w.name, w.origin): w for w in old_workloads}
    new_by = {(w.namespace, w.name, w.origin): w for w in new_workloads}
    changed = [w for k, w in old_by.items() if not _same(new_by.get(k), w)]
    changed += [w for k, w in new_by.items() if not _same(old_by.get(k), w)]
    if not changed:
        return previous

    def touched(rec: ServiceRecord) -> bool:
        svc = rec.service
        if rec.kind == "Service" and any(w.service == f"{svc.namespace}/{svc.name}" for w in changed):
            return True
        return bool(svc.selector) and any(
            w.namespace == svc.namespace and selector_matches(svc.selector, w.labels) for w in changed
        )

    affected = [rec for rec in records if touched(rec)]
    if not affected:
        return previous
    namespaces = {rec.service.namespace for rec in affected}
    index = WorkloadIndex(w for w in new_workloads if w.namespace in namespaces)
    out = dict(previous)
    for rec in affected:
        for key, eps in endpoints_of(rec, index).items():
            if out.get(key) != eps:
                out[key] = eps
    return MappingProxyType(out)
