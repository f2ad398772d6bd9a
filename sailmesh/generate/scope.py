"""What one proxy can see, as the generators ask it: visible services, VirtualServices, DestinationRules, ports.

Thin functions over the snapshot's SnapshotIndex (sailmesh/snapshot/index.py, built with the snapshot).
"""

from __future__ import annotations

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import Sidecar
from sailmesh.api.resource import Resource
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service


def outbound_policy(snapshot: MeshSnapshot, proxy: ProxyView) -> str:
    """outboundTrafficPolicy mode: the proxy's Sidecar's, else the mesh's (Istio's default ALLOW_ANY)."""
    sc = snapshot.index.sidecar(proxy)
    policy = model_of(sc, Sidecar).outbound_traffic_policy if sc is not None else None
    mode = policy.mode if policy is not None else None
    mode = mode or getattr(snapshot.mesh, "outbound_traffic_policy", "ALLOW_ANY")
    return "REGISTRY_ONLY" if mode == "REGISTRY_ONLY" else "ALLOW_ANY"


def visible_services(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Service]:
    """Services exported to the proxy's namespace, sorted by hostname."""
    return snapshot.index.visible_services(proxy)


def virtual_services(snapshot: MeshSnapshot, proxy_ns: str, gateway: str) -> list[Resource]:
    """VirtualServices bound to `gateway` (`mesh` or `ns/name`) visible from `proxy_ns`, oldest first."""
    return snapshot.index.virtual_services(proxy_ns, gateway)


def destination_rule(snapshot: MeshSnapshot, proxy_ns: str, service: Service) -> Resource | None:
    """The DestinationRule for a service as Istio picks it.

    Lookup order: the proxy's namespace, the service's namespace, the root namespace; inside each,
    an exact host beats the most specific wildcard; ties go to the oldest rule.
    """
    return snapshot.index.destination_rule(proxy_ns, service)


def inbound_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, int, str]]:
    """(containerPort, app port, protocol) for each port the sidecar owns on the proxy's address.

    Ports come from the proxy's APP_PORTS and from the target ports of the services in its namespace
    that select it; the protocol is the selecting service port's (TCP when no service names it).
    """
    protocols: dict[int, str] = {}
    # A named targetPort resolves through the named container ports of the proxy's workload; a workload
    # without that name does not serve the service port (Kubernetes gives it no endpoint), so no listener.
    me = snapshot.index.workload_at(proxy.ip, proxy.namespace)
    named = me.ports if me is not None else {}
    for svc in snapshot.index.services_in(proxy.namespace):
        if not svc.selector:
            continue
        if not all(proxy.labels.get(k) == v for k, v in svc.selector.items()):
            continue
        for p in svc.ports:
            target = named.get(p.target_port_name, 0) if p.target_port_name else (p.target_port or p.port)
            if target:
                protocols.setdefault(target, p.protocol)
    ports = set(proxy.app_ports) | set(protocols)
    return [(p, proxy.app_ports.get(p, p), protocols.get(p, "TCP")) for p in sorted(ports)]
