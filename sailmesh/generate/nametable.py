"""The name table a proxy's DNS proxy answers from: Istio's BuildNameTable (pkg/dns/server/name_table.go).

Pure: (snapshot, proxy) -> `istio.networking.nds.v1.NameTable`. For each service the proxy sees (exportTo and its
Sidecar's egress hosts, as Istio's SidecarScope.Services()): its addresses (the cluster IPs of a Service, a
ServiceEntry's `addresses`; CIDRs skipped); a service without an address that is Passthrough (a headless Service,
a ServiceEntry with resolution NONE) gets its endpoints' addresses on its first port; any other service without an
address is left out (nothing to answer with). Wildcard hosts go in as written: the agent answers names below them.
Core Services carry registry `Kubernetes` with their short name and namespace, so the agent answers `name`,
`name.ns`, `name.ns.svc` too; ServiceEntry hosts registry `External`. A headless Service's endpoints whose pod
has a subdomain also get the pod's own name, as Kubernetes DNS names it and Istio adds it:
`<hostname>.<subdomain>.<ns>.svc.<domain>` (hostname: spec.hostname, else the pod name; a StatefulSet's
`mysql-0.mysql.default.svc.cluster.local`), short name `<hostname>.<subdomain>`, its one address. A proxy using
DNS auto-allocation (autoallocate.py) gets a ServiceEntry host without addresses at its 240.240.x.y address.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sailmesh.api.rules.values import is_ip
from sailmesh.generate import autoallocate
from sailmesh.generate.scope import visible_services
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service, Workload
from sailmesh.xds.nds import EXTERNAL, KUBERNETES, NameTable

EMPTY: Mapping[str, str] = MappingProxyType({})
CLUSTERSET_SUFFIX = ".clusterset.local"  # Kubernetes MCS hosts: no short-name variants (Istio's exception)


def registry(service: Service) -> str:
    """Istio's registry name of a service: `Kubernetes` for a core Service, `External` for a ServiceEntry."""
    return KUBERNETES if service.origin.startswith("Service ") else EXTERNAL


def service_ips(snapshot: MeshSnapshot, service: Service, auto: Mapping[str, str] = EMPTY) -> list[str]:
    """The addresses the name resolves to (empty: leave the name out); `auto`: the proxy's auto-allocated ones."""
    own = autoallocate.addresses(service, auto)
    if own:
        return [a for a in own if is_ip(a)]
    if service.resolution != "NONE" or not service.ports:  # Istio: only Passthrough services use endpoints
        return []
    eps = snapshot.endpoints.get((service.hostname, service.ports[0].port), ())
    return list(dict.fromkeys(e.address for e in eps if is_ip(e.address)))


def _pod_names(out: Any, snapshot: MeshSnapshot, service: Service, pods: dict[str, Workload]) -> None:
    """Istio's headless-service pod entries (BuildNameTable): each endpoint (first port) of a pod with a subdomain
    as `<hostname>.<subdomain>.` + the service host's domain part."""
    domain = service.hostname.partition(".")[2]
    if not domain:
        return
    for e in snapshot.endpoints.get((service.hostname, service.ports[0].port), ()):
        pod = pods.get(e.workload)
        if pod is None or not pod.subdomain or not is_ip(e.address):
            continue
        short = f"{pod.hostname}.{pod.subdomain}"
        info = out.table[f"{short}.{domain}"]
        del info.ips[:]
        info.ips.append(e.address)
        info.registry, info.shortname, info.namespace = KUBERNETES, short, service.namespace


def build_name_table(snapshot: MeshSnapshot, proxy: ProxyView) -> Any:
    """The proxy's NameTable (a protobuf message)."""
    out = NameTable()
    pods: dict[str, Workload] | None = None
    auto = autoallocate.for_proxy(snapshot, proxy)
    for service in visible_services(snapshot, proxy):
        ips = service_ips(snapshot, service, auto)
        if not ips:
            continue
        if not service.addresses and registry(service) == KUBERNETES:  # headless: its pods' own names
            pods = pods if pods is not None else {f"{w.namespace}/{w.name}": w for w in snapshot.workloads}
            _pod_names(out, snapshot, service, pods)
        info = out.table[service.hostname]
        info.ips.extend(ips)
        info.registry = registry(service)
        if info.registry == KUBERNETES and not service.hostname.endswith(CLUSTERSET_SUFFIX):
            info.shortname, info.namespace = service.name, service.namespace
    return out
