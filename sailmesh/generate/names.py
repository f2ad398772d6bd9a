"""Istio's Envoy resource names (clusters, listeners, route configs, virtual hosts, domains)."""

from __future__ import annotations

BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"  # a captured sidecar's inbound ports without a listener
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
HTTP_PROXY_ROUTE = "http_proxy"  # the combined route config of the explicit HTTP-proxy listener
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"
ISTIO_SERVER_NAME = "istio-envoy"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
H2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})
PRIVILEGED_PORT_SHIFT = 8000  # gateway server ports below 1024 bind port + 8000 (like Istio's 80 -> 8080)


def gateway_bind_port(port: int) -> int:
    """The port a gateway server binds: ports below 1024 move up by 8000 (no root needed)."""
    return port + PRIVILEGED_PORT_SHIFT if port < 1024 else port


def outbound_cluster(port: int, subset: str, host: str) -> str:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` (subset may be empty)."""
    return f"outbound|{port}|{subset}|{host}"


def parse_cluster(name: str) -> tuple[str, int, str, str]:
    """(direction, port, subset, host) of an `outbound|...`/`inbound|...` cluster name."""
    direction, port, subset, host = name.split("|", 3)
    return direction, int(port), subset, host


def inbound_cluster(port: int) -> str:
    """`inbound|9080||` (Istio names inbound clusters by the container port only)."""
    return f"inbound|{port}||"


def listener_name(ip: str, port: int) -> str:
    """`127.0.1.2_9080`."""
    return f"{ip}_{port}"


def port_route(port: int) -> str:
    """Outbound route config of one port: `9080`."""
    return str(port)


def gateway_route(port: int) -> str:
    """Gateway route config of one server port: `http.8080`."""
    return f"http.{port}"


def vhost_name(host: str, port: int) -> str:
    """`reviews.default.svc.cluster.local:9080`."""
    return f"{host}:{port}"


def is_http(protocol: str) -> bool:
    """Whether Envoy should run an HTTP connection manager for this Istio protocol."""
    return protocol.upper() in HTTP_PROTOCOLS


def host_aliases(hostname: str, service_ns: str, proxy_ns: str, domain_suffix: str) -> list[str]:
    """The names a client may use for a service, as Istio's generateVirtualHostDomains lists them.

    `reviews.default.svc.cluster.local` seen from namespace `default`: the FQDN, `reviews`,
    `reviews.default.svc`, `reviews.default`; from another namespace the short name is left out.
    Hosts outside `<ns>.svc.<suffix>` (ServiceEntry hosts) have no aliases.
    """
    out = [hostname]
    tail = f".{service_ns}.svc.{domain_suffix}"
    if hostname.endswith(tail):
        short = hostname[: -len(tail)]
        if service_ns == proxy_ns:
            out.append(short)
        out.append(f"{short}.{service_ns}.svc")
        out.append(f"{short}.{service_ns}")
    return out


def domains_with_port(names: list[str], port: int, plain: bool) -> list[str]:
    """Each name with `:port`, and (if plain) also without, in Istio's order (name, name:port). An IPv6 address
    takes the port as a Host header carries it, `[fd00::c]:9080` (Istio's util.DomainName: net.JoinHostPort)."""
    out: list[str] = []
    for n in names:
        if plain:
            out.append(n)
        out.append(f"[{n}]:{port}" if ":" in n else f"{n}:{port}")
    return out
