"""What one proxy can see, as the generators ask it: visible services, VirtualServices, DestinationRules, ports.

Thin functions over the snapshot's SnapshotIndex (sailmesh/snapshot/index.py, built with the snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import IstioEgressListener, IstioIngressListener, Sidecar
from sailmesh.api.resource import Resource
from sailmesh.generate import names
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


def destination_rule(snapshot: MeshSnapshot, proxy_ns: str, service: Service,
                     labels: Mapping[str, str] | None = None) -> Resource | None:
    """The DestinationRule for a service as Istio picks it for a proxy of `proxy_ns` with `labels`.

    Lookup order: the proxy's namespace, the service's namespace, the root namespace; inside each,
    an exact host beats the most specific wildcard; several rules for that host are merged as Istio merges them
    (snapshot/drmerge.py). A rule with a workloadSelector
    applies only to the matching proxies of its own namespace and comes before the rules without one
    (SnapshotIndex.destination_rule).
    """
    return snapshot.index.destination_rule(proxy_ns, service, labels)


def _workload_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, int, str]]:
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


def _default_endpoint(text: str | None, proxy: ProxyView, port: int) -> tuple[str, int] | None:
    """Where a Sidecar ingress listener forwards: `127.0.0.1:N` / `[::1]:N` as written; `0.0.0.0:N` / `[::]:N`
    (and unset: the listener's port) the workload's own port N, which embedded mode's app serves at its
    APP_PORTS port on the proxy's address; None for `unix://` (not supported here)."""
    if not text:
        return proxy.ip, proxy.app_ports.get(port, port)
    if text.startswith("unix://"):
        return None
    host, _, raw = text.rpartition(":")
    host = host.strip("[]")
    if not raw.isdigit() or not host:
        return None  # validation refuses it; a bypassing one builds no listener
    n = int(raw)
    if host in ("0.0.0.0", "::"):
        return proxy.ip, proxy.app_ports.get(n, n)
    return host, n


def sidecar_ingress(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, str, int, str]] | None:
    """The proxy's Sidecar `ingress` listeners as (port, app address, app port, protocol); None when its Sidecar
    declares none (Istio then derives the inbound ports from the workload)."""
    sc = snapshot.index.sidecar(proxy)
    ingress = model_of(sc, Sidecar).ingress if sc is not None else None
    if not ingress:
        return None
    out = []
    for il in ingress:
        port = il.port.number if il.port is not None else None
        if not port:
            continue
        target = _default_endpoint(il.default_endpoint, proxy, port)
        if target is not None:
            out.append((port, target[0], target[1], (il.port.protocol if il.port else None) or "TCP"))
    return out


def ingress_listeners(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[int, IstioIngressListener]:
    """Port -> the proxy's Sidecar `ingress` listener on it (for `bind` and `tls`); {} without any."""
    sc = snapshot.index.sidecar(proxy) if proxy.type == "sidecar" else None
    ingress = model_of(sc, Sidecar).ingress if sc is not None else None
    return {il.port.number: il for il in ingress or () if il.port is not None and il.port.number}


def inbound_endpoints(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, str, int, str]]:
    """(listener port, app address, app port, protocol) of each inbound port: the Sidecar's `ingress` listeners
    when it declares them (only those, as Istio), else the workload's ports on the proxy's address."""
    declared = sidecar_ingress(snapshot, proxy) if proxy.type == "sidecar" else None
    if declared is not None:
        return declared
    return [(p, proxy.ip, a, proto) for p, a, proto in _workload_ports(snapshot, proxy)]


def inbound_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, int, str]]:
    """(port, app port, protocol) of each inbound listener (`inbound_endpoints` without the app address)."""
    return [(p, a, proto) for p, _, a, proto in inbound_endpoints(snapshot, proxy)]


def egress_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[str, int, str, tuple[tuple[str, str], ...]]]:
    """The proxy's Sidecar egress listeners that name a `port`: (bind address, port, protocol, their hosts as
    (namespace, host)), bound on the proxy's address unless `bind` says otherwise; ports its inbound listeners use
    on that address are left out (Envoy refuses two listeners on one address, as Istio drops such conflicts)."""
    ingress = ingress_listeners(snapshot, proxy)
    taken = {((ingress[p].bind if p in ingress else None) or proxy.ip, p)
             for p, *_ in inbound_endpoints(snapshot, proxy)}
    out = []
    for listener in _egress_with_ports(snapshot, proxy):
        port = (listener.port.number if listener.port is not None else None) or 0
        bind = listener.bind or proxy.ip
        if (bind, port) in taken:
            continue
        taken.add((bind, port))
        hosts = tuple((proxy.namespace if ns == "." else ns, host)
                      for ns, _, host in (h.partition("/") for h in listener.hosts or ()))
        out.append((bind, port, (listener.port.protocol if listener.port else None) or "TCP", hosts))
    return out


def _egress_with_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[IstioEgressListener]:
    sc = snapshot.index.sidecar(proxy) if proxy.type == "sidecar" else None
    egress = model_of(sc, Sidecar).egress if sc is not None else None
    return [e for e in egress or () if e.port is not None and e.port.number]


def egress_http_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[int]:
    """The HTTP ports of the proxy's Sidecar egress listeners (each needs its route config, conflicts or not:
    this depends only on the Sidecar, as route configs are shared by the proxies of one outbound key)."""
    return [e.port.number for e in _egress_with_ports(snapshot, proxy)
            if e.port is not None and e.port.number and names.is_http(e.port.protocol or "TCP")]
