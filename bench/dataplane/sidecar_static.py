"""Turn a running sidecar's `/config_dump?include_eds` into a static Envoy bootstrap (for A/B experiments).

The copy listens where the sidecar did (its pod IP and ports), with xDS resolved in place: EDS clusters
become STATIC with their last endpoints, RDS route names become inline route configs, the ADS cluster
and `dynamic_resources` go. Variants strip one group of sidecar features at a time (see VARIANTS).
The sidecar's SDS references (`default`, `ROOTCA` from its agent, whose key a config dump never shows) become
static secrets of the same names: a fresh certificate for the sidecar's identity from a CA shared by every copy
this process makes, so the copies still talk Istio mTLS to each other with the sidecar's TLS settings.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.dataplane.errors import BenchError
from sailmesh.api.identity import Identity
from sailmesh.ca.authority import CertificateAuthority

Config = dict[str, Any]
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"


def _strip_type(msg: Config) -> Config:
    out = dict(msg)
    out.pop("@type", None)
    return out


def _section(dump: Config, suffix: str) -> Config:
    for c in dump.get("configs", []):
        if str(c.get("@type", "")).rsplit(".", 1)[-1] == suffix:  # not ScopedRoutesConfigDump for RoutesConfigDump
            return c  # type: ignore[no-any-return]
    return {}


def _clean_assignment(cla: Config) -> Config:
    """The dumped ClusterLoadAssignment as loadable config (the dump shows unset locality weights as 0)."""
    out = _strip_type(copy.deepcopy(cla))
    for loc in out.get("endpoints", []):
        if not loc.get("load_balancing_weight"):
            loc.pop("load_balancing_weight", None)
    return out


def to_static(dump: Config) -> Config:
    """The bootstrap of a static Envoy equivalent to the sidecar at the time of the dump (which stays as it was)."""
    dump = copy.deepcopy(dump)
    boot = copy.deepcopy(_section(dump, "BootstrapConfigDump").get("bootstrap", {}))
    if not boot:
        raise BenchError("config dump without a bootstrap")
    boot.pop("dynamic_resources", None)
    routes = {r["route_config"]["name"]: _strip_type(r["route_config"])
              for r in _section(dump, "RoutesConfigDump").get("dynamic_route_configs", [])}
    eps = {e["endpoint_config"]["cluster_name"]: _clean_assignment(e["endpoint_config"])
           for e in _section(dump, "EndpointsConfigDump").get("dynamic_endpoint_configs", [])}
    clusters = [c for c in boot.get("static_resources", {}).get("clusters", []) if c.get("name") != "xds-grpc"]
    for dc in _section(dump, "ClustersConfigDump").get("dynamic_active_clusters", []):
        c = _strip_type(dc["cluster"])
        if c.get("type") == "EDS":
            service = c.pop("eds_cluster_config", {}).get("service_name", c["name"])
            c["type"] = "STATIC"
            c["load_assignment"] = eps.get(service, {"cluster_name": c["name"]})
        clusters.append(c)
    listeners = list(boot.get("static_resources", {}).get("listeners", []))
    for dl in _section(dump, "ListenersConfigDump").get("dynamic_listeners", []):
        lst = _strip_type(dl["active_state"]["listener"])
        for hcm in hcms(lst):
            if "rds" in hcm:
                name = hcm.pop("rds")["route_config_name"]
                hcm["route_config"] = routes.get(name, {"name": name})
        listeners.append(lst)
    clusters = [c for c in clusters if c.get("name") != SDS_CLUSTER]
    boot["static_resources"] = {"listeners": listeners, "clusters": clusters}
    if _resolve_sds(boot):
        meta = boot.get("node", {}).get("metadata", {})
        boot["static_resources"]["secrets"] = static_secrets(
            Identity(TRUST_DOMAIN, str(meta.get("NAMESPACE", "default")), str(meta.get("SERVICE_ACCOUNT", "default"))))
    return boot


SDS_CLUSTER = "sds-grpc"
TRUST_DOMAIN = "cluster.local"
TLS_CONTEXTS = ("UpstreamTlsContext", "DownstreamTlsContext")


def _transport_sockets(boot: Config) -> Iterator[Config]:
    res = boot.get("static_resources", {})
    for c in res.get("clusters", []):
        if "transport_socket" in c:
            yield c["transport_socket"]
        for m in c.get("transport_socket_matches", []):
            if "transport_socket" in m:
                yield m["transport_socket"]
    for lst in res.get("listeners", []):
        for fc in lst.get("filter_chains", []):
            if "transport_socket" in fc:
                yield fc["transport_socket"]


def _resolve_sds(boot: Config) -> bool:
    """Point every SDS secret reference at a static secret of the same name; whether there was any."""
    found = False
    for ts in _transport_sockets(boot):
        ctx = ts.get("typed_config", {})
        if str(ctx.get("@type", "")).rsplit(".", 1)[-1] not in TLS_CONTEXTS:
            continue
        common = ctx.get("common_tls_context", {})
        refs = [*common.get("tls_certificate_sds_secret_configs", []),
                common.get("combined_validation_context", {}).get("validation_context_sds_secret_config", {})]
        for ref in refs:
            if ref.pop("sds_config", None) is not None:
                found = True
    return found


@functools.cache
def _authority() -> CertificateAuthority:
    """One CA per process, so the client and server copies trust each other (its directory lives as long)."""
    folder = tempfile.TemporaryDirectory(prefix="sailmesh-bench-ca-")
    ca = CertificateAuthority.self_signed(folder.name)
    _AUTHORITY_DIRS.append(folder)
    return ca


_AUTHORITY_DIRS: list[tempfile.TemporaryDirectory[str]] = []


def static_secrets(identity: Identity) -> list[Config]:
    """Istio's `default` (a new key and certificate for `identity`) and `ROOTCA`, as bootstrap secrets."""
    ca = _authority()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    issued = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), identity)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return [
        {"name": "default", "tls_certificate": {"certificate_chain": {"inline_string": "".join(issued.chain[:-1])},
                                                "private_key": {"inline_string": key_pem}}},
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": ca.trust_bundle()}}},
    ]


def hcms(listener: Config) -> Iterator[Config]:
    """Every HttpConnectionManager config in a listener."""
    for fc in [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]:
        for f in fc.get("filters", []):
            if f.get("name") == HCM:
                yield f["typed_config"]


def _all_hcms(cfg: Config) -> Iterator[Config]:
    for lst in cfg["static_resources"]["listeners"]:
        yield from hcms(lst)


def _all_routes(cfg: Config) -> Iterator[tuple[Config, Config]]:
    for hcm in _all_hcms(cfg):
        for vh in hcm.get("route_config", {}).get("virtual_hosts", []):
            for r in vh.get("routes", []):
                yield vh, r


MX_FILTERS = ("istio.metadata_exchange.read", "istio.metadata_exchange.add")


def drop_istio_metrics(cfg: Config) -> None:
    """No Istio standard metrics: no metadata-exchange filters, no access-log stream to the agent."""
    for lst in cfg["static_resources"]["listeners"]:
        for fc in [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]:
            for f in fc.get("filters", []):
                f.get("typed_config", {}).pop("access_log", None)
    for hcm in _all_hcms(cfg):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if f.get("name") not in MX_FILTERS]


def drop_extra_filters(cfg: Config) -> None:
    """Only the router filter (drops fault, cors, dynamic_forward_proxy, ...)."""
    for hcm in _all_hcms(cfg):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if f.get("name") == ROUTER]


def drop_retries(cfg: Config) -> None:
    """No retry policy on routes, no x-envoy-attempt-count."""
    for vh, r in _all_routes(cfg):
        vh.pop("include_request_attempt_count", None)
        r.get("route", {}).pop("retry_policy", None)


def drop_hcm_options(cfg: Config) -> None:
    """HCM without Istio's options (path normalisation, XFCC, server name, websocket upgrades)."""
    for hcm in _all_hcms(cfg):
        for k in ("normalize_path", "path_with_escaped_slashes_action", "forward_client_cert_details",
                  "set_current_client_cert_details", "server_name", "upgrade_configs"):
            hcm.pop(k, None)


def drop_route_extras(cfg: Config) -> None:
    """Routes without the explicit 0s timeouts, max_stream_duration and decorator."""
    for _, r in _all_routes(cfg):
        r.pop("decorator", None)
        for k in ("timeout", "max_stream_duration"):
            r.get("route", {}).pop(k, None)


def drop_cluster_extras(cfg: Config) -> None:
    """Clusters with default LB, no circuit-breaker tracking, no metadata, default protocol options."""
    for c in cfg["static_resources"]["clusters"]:
        for k in ("circuit_breakers", "metadata", "typed_extension_protocol_options"):
            c.pop(k, None)
        if c.get("lb_policy") != "CLUSTER_PROVIDED":  # ORIGINAL_DST (PassthroughCluster) needs it
            c.pop("lb_policy", None)


def drop_bootstrap_extras(cfg: Config) -> None:
    """No stats tag extraction rules, no overload manager."""
    cfg.pop("stats_config", None)
    cfg.pop("overload_manager", None)


# Cumulative: each variant also has every change listed before it.
VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("- Istio metrics (peer headers, access logs)", drop_istio_metrics),
    ("- fault/cors/dynamic_forward_proxy filters", drop_extra_filters),
    ("- retry policy + attempt-count header", drop_retries),
    ("- HCM options (XFCC, normalize_path, ...)", drop_hcm_options),
    ("- route timeouts/decorator", drop_route_extras),
    ("- cluster extras (LEAST_REQUEST, CB tracking)", drop_cluster_extras),
    ("- stats tags + overload manager", drop_bootstrap_extras),
]


def drop_per_try_timeout(cfg: Config) -> None:
    """Retries without a per-try timeout (the demo's perTryTimeout: 2s)."""
    for _, r in _all_routes(cfg):
        r.get("route", {}).get("retry_policy", {}).pop("per_try_timeout", None)


def drop_route_timeout(cfg: Config) -> None:
    """No request timeout (the demo's timeout: 10s; Istio's default is none, `0s`)."""
    for _, r in _all_routes(cfg):
        if "route" in r:
            r["route"]["timeout"] = "0s"


def drop_pool_limits(cfg: Config) -> None:
    """Clusters without the DestinationRule's connection-pool limits (thresholds, per-connection request cap)."""
    for c in cfg["static_resources"]["clusters"]:
        c.pop("circuit_breakers", None)
        c.pop("max_requests_per_connection", None)
        for opts in c.get("typed_extension_protocol_options", {}).values():
            opts.get("common_http_protocol_options", {}).pop("max_requests_per_connection", None)


# Set-up (4)'s extras over (3), cumulative: what the demo's VirtualService and DestinationRule add per request.
DEMO_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("demo sidecar config (static copy)", None),
    ("- perTryTimeout", drop_per_try_timeout),
    ("- route timeout", drop_route_timeout),
    ("- retry policy + attempt-count header", drop_retries),
    ("- connection-pool limits", drop_pool_limits),
]


def _access_logs(cfg: Config) -> Iterator[list[Config]]:
    """Every access_log list of the copy's HCMs and tcp_proxies."""
    for lst in cfg["static_resources"]["listeners"]:
        for fc in [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]:
            for f in fc.get("filters", []):
                logs = f.get("typed_config", {}).get("access_log")
                if logs:
                    yield logs


def drop_access_log_stream(cfg: Config) -> None:
    """Peer-metadata headers kept, no access-log stream to the agent."""
    for lst in cfg["static_resources"]["listeners"]:
        for fc in [*lst.get("filter_chains", []), lst.get("default_filter_chain") or {}]:
            for f in fc.get("filters", []):
                f.get("typed_config", {}).pop("access_log", None)


def drop_peer_headers(cfg: Config) -> None:
    """Access-log stream kept, no metadata-exchange filters."""
    for hcm in _all_hcms(cfg):
        hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if f.get("name") not in MX_FILTERS]


def default_log_buffer(cfg: Config) -> None:
    """The access-log stream with Envoy's default 16 KiB buffer (sailmesh sets 64 KiB since session 7: fewer,
    larger gRPC messages; still flushed every second)."""
    for logs in _access_logs(cfg):
        for al in logs:
            common = al.get("typed_config", {}).get("common_config")
            if common is not None:
                common["buffer_size_bytes"] = 16384


FILE_LOG_FORMAT = ("%RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% "
                   "%REQ(:AUTHORITY)% %DYNAMIC_METADATA(sailmesh.peer:metadata)% %UPSTREAM_PEER_URI_SAN% "
                   "%DOWNSTREAM_PEER_URI_SAN% %REQ(CONTENT-TYPE)% %RESP(GRPC-STATUS)%\n")


def file_log_instead(cfg: Config) -> None:
    """The same fields as one text line per request to a file (/dev/null) instead of the gRPC stream: what
    Envoy's formatting alone costs (an agent would read a pipe)."""
    for logs in _access_logs(cfg):
        for i, al in enumerate(logs):
            if al.get("name", "").endswith("_grpc"):
                logs[i] = {"name": "envoy.access_loggers.file", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": "/dev/null", "log_format": {"text_format_source": {"inline_string": FILE_LOG_FORMAT}}}}


def stats_logger_instead(cfg: Config) -> None:
    """HTTP metrics kept by Envoy's stats access logger (telemetry/stats_logger.py) instead of the stream (what
    sailmesh generates since session 11; on a copy captured from an older mesh, the stream's loggers are replaced).
    """
    from google.protobuf import json_format

    from sailmesh.telemetry.names import parse_stream
    from sailmesh.telemetry.stats_logger import http_stats_log

    for hcm in _all_hcms(cfg):
        logs = hcm.get("access_log", [])
        for i, al in enumerate(logs):
            if al.get("name") != "envoy.access_loggers.http_grpc":
                continue
            stream = parse_stream(al["typed_config"]["common_config"].get("log_name", ""))
            if stream is not None:
                logs[i] = json_format.MessageToDict(http_stats_log(stream[0], stream[1]),
                                                    preserving_proto_field_name=True)


def stream_instead(cfg: Config) -> None:
    """HTTP metrics streamed to the agent, one access-log entry per request (main's design before session 11)
    instead of Envoy's stats logger: the A/B within one run."""
    from google.protobuf import json_format

    from sailmesh.telemetry.names import KEY_SEPARATOR
    from sailmesh.telemetry.standard import http_access_log

    for hcm in _all_hcms(cfg):
        out = []
        for al in hcm.get("access_log", []):
            if al.get("name") == "envoy.access_loggers.http_grpc":
                continue  # the CONNECT-only stream: the one below streams every request
            if al.get("name") == "envoy.access_loggers.stats":
                counters = al["typed_config"].get("counters") or al["typed_config"]["histograms"]
                key = next(t["value_format"] for t in counters[0]["stat"]["tags"] if t["name"] == "k")
                reporter, services = key.split(KEY_SEPARATOR)[:2]
                al = json_format.MessageToDict(http_access_log(reporter, [s for s in services.split(",") if s]),
                                               preserving_proto_field_name=True)
            out.append(al)
        hcm["access_log"] = out


def stats_logger_body_bytes(cfg: Config) -> None:
    """The stats logger with body bytes (%BYTES_RECEIVED% / %BYTES_SENT%) instead of Istio's request.total_size /
    response.total_size (two CEL evaluations per request): what the CEL costs."""
    stats_logger_instead(cfg)
    for hcm in _all_hcms(cfg):
        for al in hcm.get("access_log", []):
            for h in al.get("typed_config", {}).get("histograms", []):
                if "total_size" in h.get("value_format", ""):
                    h["value_format"] = "%BYTES_RECEIVED%" if "request" in h["value_format"] else "%BYTES_SENT%"


# Alternatives (each applied to the copy alone, not cumulative): what each part of the metrics costs.
METRICS_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("stats access logger instead of the stream", stats_logger_instead),
    ("access-log stream instead of the stats logger", stream_instead),
    ("stats access logger, body bytes (no CEL)", stats_logger_body_bytes),
    ("no access-log stream (peer headers kept)", drop_access_log_stream),
    ("no peer headers (access-log stream kept)", drop_peer_headers),
    ("access-log stream, 16 KiB buffer (Envoy's default)", default_log_buffer),
    ("text access log to a file instead of the stream", file_log_instead),
    ("no Istio metrics", drop_istio_metrics),
]


def _tls_contexts(cfg: Config) -> Iterator[Config]:
    for ts in _transport_sockets(cfg):
        ctx = ts.get("typed_config", {})
        if str(ctx.get("@type", "")).rsplit(".", 1)[-1] in TLS_CONTEXTS:
            yield ctx


def static_pair_tls(cfg: Config) -> None:
    """The hop's TLS set as the static mTLS pair sets it (bench/static_envoy.py MtlsSide): the server without
    Istio's TLS 1.2 cipher list and with the static pair's ALPN (so `istio` is negotiated, as there)."""
    for ctx in _tls_contexts(cfg):
        common = ctx.get("common_tls_context", {})
        common.get("tls_params", {}).pop("cipher_suites", None)
        if ctx["@type"].endswith("DownstreamTlsContext"):
            common["alpn_protocols"] = ["istio-http/1.1", "istio", "http/1.1"]


def plaintext_hop(cfg: Config) -> None:
    """No TLS between the copies: the client's clusters keep only their plaintext socket (the server's PERMISSIVE
    plaintext chain answers), everything else as in the sidecar."""
    for c in cfg["static_resources"]["clusters"]:
        matches = c.get("transport_socket_matches")
        if matches:
            c["transport_socket_matches"] = [m for m in matches if not str(
                m.get("transport_socket", {}).get("typed_config", {}).get("@type", "")).endswith("UpstreamTlsContext")]
        ts = c.get("transport_socket", {})
        if str(ts.get("typed_config", {}).get("@type", "")).endswith("UpstreamTlsContext"):
            c.pop("transport_socket")


def drop_xfcc(cfg: Config) -> None:
    """No X-Forwarded-Client-Cert: the HCMs sanitize it instead of setting the peer's certificate details (the
    header Istio's server sidecar adds over mTLS; measured only, it is Istio's behaviour)."""
    for hcm in _all_hcms(cfg):
        hcm.pop("set_current_client_cert_details", None)
        if "forward_client_cert_details" in hcm:
            hcm["forward_client_cert_details"] = "SANITIZE"


# Alternatives for the mTLS hop, next to the minimal static pair and the static mTLS pair (issue 9's floor).
TLS_VARIANTS: list[tuple[str, Callable[[Config], None] | None]] = [
    ("sidecar config (static copy)", None),
    ("static mTLS pair's TLS settings on the hop", static_pair_tls),
    ("plaintext hop (TLS off, all else kept)", plaintext_hop),
    ("no XFCC (mTLS kept)", drop_xfcc),
    ("no Istio metrics", drop_istio_metrics),
]


def alternative_configs(base: Config, variants: list[tuple[str, Callable[[Config], None] | None]]
                        ) -> list[tuple[str, Config]]:
    """Each variant applied to its own copy of `base` (not cumulative)."""
    out = []
    for name, change in variants:
        cur = copy.deepcopy(base)
        if change is not None:
            change(cur)
        out.append((name, cur))
    return out


def variant_configs(base: Config, variants: list[tuple[str, Callable[[Config], None] | None]] | None = None
                    ) -> list[tuple[str, Config]]:
    """The cumulative variants of one static copy (VARIANTS unless given)."""
    out, cur = [], copy.deepcopy(base)
    for name, change in variants or VARIANTS:
        if change is not None:
            cur = copy.deepcopy(cur)
            change(cur)
        out.append((name, cur))
    return out


if __name__ == "__main__":  # python -m bench.dataplane.sidecar_static DUMP.json: print the static copy
    import sys

    with open(sys.argv[1], encoding="utf-8") as fh:
        print(json.dumps(to_static(json.load(fh)), indent=2))
