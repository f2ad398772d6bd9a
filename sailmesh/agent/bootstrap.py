"""Envoy's bootstrap for one workload, built purely from an AgentConfig (Istio's envoy_bootstrap.json, trimmed)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from sailmesh import __version__
from sailmesh.agent.config import AgentConfig
from sailmesh.dnsio import read_resolv_conf
from sailmesh.telemetry.names import ALS_CLUSTER

XDS_CLUSTER = "xds-grpc"
SDS_CLUSTER = "sds-grpc"
PROMETHEUS_CLUSTER = "prometheus_stats"
PROMETHEUS_LISTENER = "prometheus_stats"
PROMETHEUS_PATH = "/stats/prometheus"
STATS_FLUSH_INTERVAL = "1s"
HTTP_PROTOCOL_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CONTROL_PLANE_SAN = "istiod.istio-system.svc"  # the control plane's serving certificate (Istio's istiod name)
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

# Istio's tag extraction (tools/packaging/common/envoy_bootstrap.json), so Prometheus labels read the same.
_ISTIO_TAGS: tuple[tuple[str, str], ...] = (
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"(response_code=\.=(.+?);\.;)|_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    (
        "http_conn_manager_listener_prefix",
        r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    ("http_conn_manager_prefix", r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("mongo_prefix", r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"),
)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def node(cfg: AgentConfig) -> dict[str, Any]:
    """The node Envoy presents to the control plane: Istio's id, cluster and metadata keys."""
    metadata: dict[str, Any] = {
        "NAMESPACE": cfg.namespace,
        "NAME": cfg.name,
        "LABELS": dict(cfg.labels),
        "SERVICE_ACCOUNT": cfg.service_account,
        "INSTANCE_IPS": ",".join((cfg.ip, *cfg.extra_ips)),
        "APP_PORTS": cfg.app_ports_text,
        "PROXY_TYPE": cfg.proxy_type,
        "WORKLOAD_NAME": cfg.labels.get("app.kubernetes.io/name") or cfg.app,
        "CLUSTER_ID": cfg.cluster_id,
        "MESH_ID": cfg.mesh_id,
        "SAILMESH_VERSION": cfg.version or __version__,
        "ENVOY_STATUS_PORT": cfg.health_port,
        "ENVOY_PROMETHEUS_PORT": cfg.stats_port,
    }
    if cfg.interception_mode:  # Istio's INTERCEPTION_MODE; absent = not captured (the embedded mesh's sidecar)
        metadata["INTERCEPTION_MODE"] = cfg.interception_mode
    if cfg.dns_capture:
        metadata["DNS_CAPTURE"] = "true"
    if cfg.dns_auto_allocate:
        metadata["DNS_AUTO_ALLOCATE"] = "true"
    return {"id": cfg.node_id, "cluster": cfg.node_cluster, "metadata": metadata}


def _file_sds(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "sds_config": {
        "path_config_source": {"path": path, "watched_directory": {"path": path.rsplit("/", 1)[0]}},
        "resource_api_version": "V3"}}


def xds_tls(secrets_dir: str) -> dict[str, Any]:
    """mTLS to the control plane: the workload certificate from a file-based SDS response the agent keeps
    current (`xds-cert`, `xds-root`), and the control plane must present istiod.istio-system.svc. TLS 1.2 to 1.3:
    Envoy's upstream maximum is 1.2 by default, and Istio's xDS connection (its agent's, Go's TLS) negotiates 1.3."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UPSTREAM_TLS,
        "sni": CONTROL_PLANE_SAN,
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
            "tls_certificate_sds_secret_configs": [_file_sds("xds-cert", f"{secrets_dir}/xds-cert.json")],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": CONTROL_PLANE_SAN}}]},
                "validation_context_sds_secret_config": _file_sds("xds-root", f"{secrets_dir}/xds-root.json"),
            },
        },
    }}  # fmt: skip


def xds_cluster(cfg: AgentConfig, secrets_dir: str = "") -> dict[str, Any]:
    """The static gRPC cluster to the control plane (HTTP/2 is mandatory or Envoy never connects); mTLS when
    `secrets_dir` (the agent's file-based SDS responses) is given."""
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(cfg.xds_host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(cfg.xds_host, cfg.xds_port)}}]}],
        },
        "circuit_breakers": {
            "thresholds": [
                {"priority": p, "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
                for p in ("DEFAULT", "HIGH")
            ]
        },
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "10s"}}
                },
            }
        },
    }
    if secrets_dir:
        cluster["transport_socket"] = xds_tls(secrets_dir)
    return cluster


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """Istio's `sds-grpc`: Envoy gRPC over HTTP/2 to the agent's SDS Unix socket (secrets `default`, `ROOTCA`)."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def als_cluster(socket_path: str) -> dict[str, Any]:
    """The agent's gRPC access-log service (Istio's standard metrics) on a Unix socket: HTTP/2, like xds-grpc."""
    return {
        "name": ALS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ALS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def prometheus_cluster(cfg: AgentConfig) -> dict[str, Any]:
    """A static cluster pointing at Envoy's own admin, which the 15090 listener forwards to."""
    return {
        "name": PROMETHEUS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "load_assignment": {
            "cluster_name": PROMETHEUS_CLUSTER,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket_address(cfg.admin_host, cfg.admin_port)}}]}],
        },
    }


def prometheus_listener(cfg: AgentConfig) -> dict[str, Any]:
    """Istio's 15090 listener: only `/stats/prometheus` of the admin interface, nothing else."""
    hcm = {
        "@type": HCM,
        "stat_prefix": "stats",
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": PROMETHEUS_PATH}, "route": {"cluster": PROMETHEUS_CLUSTER}},
                    ],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": PROMETHEUS_LISTENER,
        "address": _socket_address(cfg.ip, cfg.stats_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def dynamic_resources(cfg: AgentConfig) -> dict[str, Any]:
    """LDS and CDS over one ADS stream (SotW or delta) to the xds-grpc cluster."""
    source = {
        "ads": {},
        "initial_fetch_timeout": _duration(cfg.initial_fetch_timeout_s),
        "resource_api_version": "V3",
    }
    return {
        "ads_config": {
            "api_type": "DELTA_GRPC" if cfg.delta else "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
        "lds_config": dict(source),
        "cds_config": dict(source),
    }


def system_resolvers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """The IPv4 nameservers of the system's resolver configuration (none when it cannot be read)."""
    return [host for host, _port in read_resolv_conf(resolv_conf).servers if _is_ip(host)]


def dns_resolver(dns_address: str, system: list[str] | None = None) -> dict[str, Any]:
    """Envoy's c-ares resolver asking only the mesh's DNS, which answers service hostnames and forwards other names
    to the system's nameservers (controlplane/dns.py): with more than one server c-ares reorders them by failures,
    and a system nameserver asked first answers NXDOMAIN for a mesh name. The mesh's DNS forwards only for loopback
    clients, so a mesh DNS on another address is followed by the system's nameservers (it answers REFUSED for other
    names, and c-ares asks the next one). `system`: those nameservers (read from resolv.conf only when needed)."""
    host, _, port = dns_address.rpartition(":")
    host = host.strip("[]")
    resolvers = [_socket_address(host, int(port))]
    if not _is_loopback(host):
        resolvers += [_socket_address(ip, 53) for ip in (system if system is not None else system_resolvers())]
    for r in resolvers:
        r["socket_address"]["protocol"] = "UDP"
    return {"name": "envoy.network.dns_resolver.cares", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
        "resolvers": resolvers,
        "dns_resolver_options": {"no_default_search_domain": True},
    }}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def stats_config() -> dict[str, Any]:
    """Istio's tag extraction for Envoy's own stats, instead of Envoy's defaults.

    Not Istio's ~30 tags for its standard metrics' labels (`(reporter=\\.=(.*?);\\.;)`, ...): Istio's proxy names
    those metrics' stats with `label=.=value;.;` segments in its istio.stats filter; here the agent counts them from
    access logs, so no Envoy stat name carries such a segment. Unanchored, those regexes ran on every stat name
    Envoy creates: ~45 ms of Envoy CPU per cluster (30 clusters: 1.5 CPU s at start-up against 0.3 s without them).
    """
    return {"use_all_default_tags": False,
            "stats_tags": [{"tag_name": name, "regex": regex} for name, regex in _ISTIO_TAGS]}


def build(cfg: AgentConfig, extra_static: dict[str, list[dict[str, Any]]] | None = None,
          sds_socket: str = "", xds_secrets_dir: str = "", als_socket: str = "") -> dict[str, Any]:
    """The full bootstrap; `extra_static` adds listeners/clusters to static_resources (used by tests);
    `sds_socket` adds the `sds-grpc` cluster (the agent always passes its socket); `als_socket` is where the agent
    counts Istio's standard metrics from access logs (no cluster when "")."""
    extra = extra_static or {}
    sds = [sds_cluster(sds_socket)] if sds_socket else []
    als = [als_cluster(als_socket)] if als_socket else []
    resolver = {"typed_dns_resolver_config": dns_resolver(cfg.dns_address)} \
        if cfg.dns_address else {}
    return {
        **resolver,
        "node": node(cfg),
        "admin": {"address": _socket_address(cfg.admin_host, cfg.admin_port)},
        "static_resources": {
            "listeners": [prometheus_listener(cfg), *extra.get("listeners", [])],
            "clusters": [xds_cluster(cfg, xds_secrets_dir), *sds, prometheus_cluster(cfg), *als,
                         *extra.get("clusters", [])],
        },
        "dynamic_resources": dynamic_resources(cfg),
        "stats_config": stats_config(),
        # Istio's HTTP metrics are Envoy histograms (telemetry/stats_logger.py), merged into the page at each flush:
        # every second (Envoy's default 5 s) so the dashboard's per-scrape latency and the counters agree.
        "stats_flush_interval": STATS_FLUSH_INTERVAL,
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": cfg.max_downstream_connections,
                    },
                }
            ]
        },
    }


def to_json(bootstrap: dict[str, Any]) -> str:
    """Serialise a bootstrap for Envoy's `-c` (JSON is valid YAML)."""
    return json.dumps(bootstrap, indent=2, sort_keys=False)
