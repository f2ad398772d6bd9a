"""Istio's protocol selection: appProtocol, then the port-name prefix, then well-known ports, else UNKNOWN."""

from __future__ import annotations

# Istio protocol names (pkg/config/protocol), upper-cased as the snapshot model spells them.
HTTP, HTTP2, HTTPS, GRPC, GRPC_WEB = "HTTP", "HTTP2", "HTTPS", "GRPC", "GRPC_WEB"
TCP, TLS, UDP, MONGO, REDIS, MYSQL = "TCP", "TLS", "UDP", "MONGO", "REDIS", "MYSQL"
HTTP_PROXY = "HTTP_PROXY"
UNKNOWN = "UNKNOWN"  # Istio's "UnsupportedProtocol": the proxy auto-detects (HTTP/1.1, HTTP/2, else TCP)

_BY_NAME = {
    "tcp": TCP,
    "udp": UDP,
    "grpc": GRPC,
    "grpc-web": GRPC_WEB,
    "http": HTTP,
    "http_proxy": HTTP_PROXY,
    "http2": HTTP2,
    "https": HTTPS,
    "tls": TLS,
    "mongo": MONGO,
    "redis": REDIS,
    "mysql": MYSQL,
}
# Kubernetes' standard appProtocol values (only valid as appProtocol, not as a port name).
_K8S_APP_PROTOCOLS = {"kubernetes.io/h2c": HTTP2, "kubernetes.io/ws": HTTP, "kubernetes.io/wss": HTTPS}
# Istio disables protocol detection on these well-known server-first ports: SMTP, DNS, MySQL, MongoDB.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})


def parse(name: str | None) -> str:
    """Istio's protocol.Parse: a protocol name, case-insensitive; anything else is UNKNOWN."""
    return _BY_NAME.get((name or "").lower(), UNKNOWN)


def infer(port: int, port_name: str = "", app_protocol: str | None = None, transport: str = "TCP") -> str:
    """The protocol of a Kubernetes Service port, as Istio's kube.ConvertProtocol decides it.

    1. transport UDP -> UDP; 2. appProtocol if set (incl. kubernetes.io/h2c, ws, wss); 3. the port name
    `<protocol>[-<suffix>]` ("grpc-web" checked first); 4. well-known ports -> TCP; 5. UNKNOWN (auto-detect).
    """
    if (transport or "TCP").upper() == "UDP":
        return UDP
    name = port_name or ""
    if app_protocol:
        if app_protocol in _K8S_APP_PROTOCOLS:
            return _K8S_APP_PROTOCOLS[app_protocol]
        name = app_protocol
    if name.lower().startswith("grpc-web"):
        return GRPC_WEB
    prefix = name.split("-", 1)[0]
    p = parse(prefix)
    if p == UNKNOWN and port in WELL_KNOWN_TCP_PORTS:
        return TCP
    return p


def is_http(protocol: str) -> bool:
    """HTTP-family protocols (Istio's IsHTTP): routed by an HTTP connection manager."""
    return protocol in (HTTP, HTTP2, GRPC, GRPC_WEB, HTTP_PROXY)
