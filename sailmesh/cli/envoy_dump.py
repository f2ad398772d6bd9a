"""Envoy's admin config dump read as istioctl's proxy-config tables: pure functions of the dump's JSON."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sailmesh.explain.refs import config_ref as config_ref  # re-exported (proxy-config's route table)

if TYPE_CHECKING:  # imported where a secret is read: `proxy-config cluster` and friends start without it
    from cryptography import x509

DUMP_TYPES = {
    "bootstrap": "BootstrapConfigDump",
    "cluster": "ClustersConfigDump",
    "listener": "ListenersConfigDump",
    "route": "RoutesConfigDump",
    "secret": "SecretsConfigDump",
    "endpoint": "EndpointsConfigDump",
}


def config_of(config: dict[str, Any], section: str) -> dict[str, Any]:
    """The part of /config_dump for a section (`cluster` -> the ClustersConfigDump), {} when absent."""
    suffix = DUMP_TYPES[section]
    return next((c for c in config.get("configs", []) if str(c.get("@type", "")).endswith("." + suffix)), {})


def section(config: dict[str, Any], clusters: dict[str, Any], name: str) -> Any:
    """What `-o json|yaml` prints: the section's dump (all: the whole dump; endpoint: /clusters' statuses)."""
    if name == "all":
        return config
    if name == "endpoint":
        return clusters or config_of(config, "endpoint")
    return config_of(config, name)


@dataclass(frozen=True)
class ClusterRow:
    fqdn: str
    port: str
    subset: str
    direction: str
    type: str
    destination_rule: str


def clusters_of(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every cluster of the dump (static, active, warming)."""
    part = config_of(config, "cluster")
    for key in ("static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"):
        for entry in part.get(key, []):
            if "cluster" in entry:
                yield entry["cluster"]


def cluster_row(c: dict[str, Any]) -> ClusterRow:
    """One cluster as istioctl's row: `outbound|9080|v1|reviews.default.svc.cluster.local` split into columns."""
    name = str(c.get("name", ""))
    kind = str(c.get("type") or (c.get("cluster_type") or {}).get("name", "")).rsplit(".", 1)[-1] or "EDS"
    parts = name.split("|")
    if len(parts) == 4:
        direction, port, subset, fqdn = parts
        return ClusterRow(fqdn or "", port, subset or "-", direction, kind, config_ref(c.get("metadata")))
    return ClusterRow(name, "-", "-", "-", kind, "-")


def cluster_rows(config: dict[str, Any]) -> list[ClusterRow]:
    """istioctl's cluster table, sorted by service, port, subset, direction."""
    return sorted((cluster_row(c) for c in clusters_of(config)),
                  key=lambda r: (r.fqdn, r.port, r.subset, r.direction))


def listeners_of(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every listener of the dump (static, active or else warming)."""
    part = config_of(config, "listener")
    for entry in part.get("static_listeners", []):
        yield entry.get("listener", {})
    for entry in part.get("dynamic_listeners", []):
        state = entry.get("active_state") or entry.get("warming_state") or {}
        if "listener" in state:
            yield state["listener"]


# istioctl's words for the ALPN lists Istio's chains match (istioctl/pkg/writer/envoy/configdump/listener.go)
_ALPN_WORDS = {
    ("http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: HTTP TLS",
    ("istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: Istio HTTP Plain",
    ("istio-peer-exchange", "istio"): "App: TCP TLS",
    ("http/1.0", "http/1.1", "h2c"): "App: HTTP",
}


def _chain_match(chain: dict[str, Any]) -> str:
    """A chain's match as istioctl words it: SNI, transport, application protocols, destination address/port."""
    m = chain.get("filter_chain_match") or {}
    out = []
    if m.get("server_names"):
        out.append("SNI: " + ",".join(m["server_names"]))
    if m.get("transport_protocol"):
        out.append(f"Trans: {m['transport_protocol']}")
    if m.get("application_protocols"):
        alpn = tuple(m["application_protocols"])
        out.append(_ALPN_WORDS.get(alpn, "App: " + ",".join(alpn)))
    port = f":{m['destination_port']}" if m.get("destination_port") else ""
    if m.get("prefix_ranges"):
        out.append("Addr: " + ",".join(f"{r.get('address_prefix', '')}/{r.get('prefix_len', 0)}"
                                        for r in m["prefix_ranges"]) + port)
    elif port:
        out.append(f"Addr: *{port}")
    return "; ".join(out) or "ALL"


def _chain_destination(chain: dict[str, Any]) -> str:
    for f in chain.get("filters", []):
        tc = f.get("typed_config", {})
        if "rds" in tc:
            return f"Route: {tc['rds'].get('route_config_name', '')}"
        if "route_config" in tc:
            return "Inline Route: " + ", ".join(
                r.get("match", {}).get("prefix", "") or r.get("match", {}).get("path", "")
                for vh in tc["route_config"].get("virtual_hosts", []) for r in vh.get("routes", [])) + "*"
        if "cluster" in tc:
            return f"Cluster: {tc['cluster']}"
        if "weighted_clusters" in tc:
            return "Clusters: " + ", ".join(c.get("name", "") for c in tc["weighted_clusters"].get("clusters", []))
    return "-"


def listener_rows(config: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """istioctl's listener table: one row per filter chain (ADDRESSES, PORT, MATCH, DESTINATION), then the
    listener's name and the config the chain comes from (Istio's `istio.config` chain metadata: the
    VirtualService of a gateway's TCP/TLS chain, as NAME.NAMESPACE; "-" when none)."""
    rows = []
    for lis in listeners_of(config):
        sock = lis.get("address", {}).get("socket_address", {})
        chains = lis.get("filter_chains", [])
        if lis.get("default_filter_chain"):
            chains = [*chains, lis["default_filter_chain"]]
        for chain in chains or [{}]:
            rows.append((str(sock.get("address", "")), str(sock.get("port_value", "")), _chain_match(chain),
                         _chain_destination(chain), str(lis.get("name", "")), config_ref(chain.get("metadata"))))
    return sorted(rows, key=lambda r: (int(r[1] or 0), r[0], r[2]))


def _route_match(route: dict[str, Any]) -> str:
    m = route.get("match", {})
    for key, fmt in (("prefix", "{}*"), ("path", "{}"), ("safe_regex", "{}"), ("path_separated_prefix", "{}*")):
        if key in m:
            value = m[key]["regex"] if key == "safe_regex" else m[key]
            return fmt.format(value)
    return "/*"


def route_configs_of(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every route configuration of the dump (static, then dynamic)."""
    part = config_of(config, "route")
    for entry in [*part.get("static_route_configs", []), *part.get("dynamic_route_configs", [])]:
        yield entry.get("route_config", {})


def route_rows(config: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """istioctl's route table: NAME, VHOST NAME, DOMAINS (first + count), MATCH, VIRTUAL SERVICE."""
    rows = []
    for rc in route_configs_of(config):
        for vh in rc.get("virtual_hosts", []):
            domains = vh.get("domains", [])
            shown = domains[0] + (f" + {len(domains) - 1} more..." if len(domains) > 1 else "") if domains else ""
            for r in vh.get("routes", []):
                rows.append((str(rc.get("name", "")), str(vh.get("name", "")), shown, _route_match(r),
                             config_ref(r.get("metadata"))))
    return sorted(rows, key=lambda r: (r[0], r[1]))


def endpoint_rows(clusters: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """istioctl's endpoint table from /clusters?format=json: ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER."""
    rows = []
    for c in clusters.get("cluster_statuses", []):
        for host in c.get("host_statuses", []):
            sock = host.get("address", {}).get("socket_address", {})
            address = sock.get("address", "") + (f":{sock['port_value']}" if "port_value" in sock else "")
            if "pipe" in host.get("address", {}):
                address = "unix://" + host["address"]["pipe"].get("path", "")
            health = host.get("health_status", {})
            status = health.get("eds_health_status", "HEALTHY")
            ejected = "FAILED" if health.get("failed_outlier_check") else "OK"
            rows.append((address, status, ejected, str(c.get("name", ""))))
    return sorted(rows, key=lambda r: (r[3], r[0]))


def _first_cert(secret: dict[str, Any]) -> x509.Certificate | None:
    """The first certificate of a secret's chain or trusted CA (inline in the dump; keys are redacted there)."""
    source = (secret.get("tls_certificate") or {}).get("certificate_chain") \
        or (secret.get("validation_context") or {}).get("trusted_ca") or {}
    data = source.get("inline_bytes") or source.get("inline_string")
    if not data:
        return None
    from cryptography import x509

    try:
        pem = base64.b64decode(data) if "inline_bytes" in source else str(data).encode()
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def secret_rows(config: dict[str, Any], now: dt.datetime | None = None) -> list[tuple[str, ...]]:
    """istioctl's secret table: name, type, status, valid, serial number, not after, not before."""
    now = now or dt.datetime.now(dt.UTC)
    part = config_of(config, "secret")
    rows: list[tuple[str, ...]] = []
    for key, status in (("static_secrets", "ACTIVE"), ("dynamic_active_secrets", "ACTIVE"),
                        ("dynamic_warming_secrets", "WARMING")):
        for entry in part.get(key, []):
            secret = entry.get("secret", {})
            kind = "Cert Chain" if "tls_certificate" in secret else "CA" if "validation_context" in secret else "-"
            cert = _first_cert(secret)
            if cert is None:
                rows.append((str(entry.get("name", "")), kind, status, "false", "-", "-", "-"))
                continue
            after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
            rows.append((str(entry.get("name", "")), kind, status, str(before <= now <= after).lower(),
                         format(cert.serial_number, "x"), after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         before.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return rows


def dynamic_resources(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the control plane sent and Envoy holds: {"clusters"|"listeners"|"routes": {name: resource}}."""
    active = config_of(config, "cluster").get("dynamic_active_clusters", [])
    clusters = {c["cluster"]["name"]: c["cluster"] for c in active if "cluster" in c}
    listeners = {}
    for entry in config_of(config, "listener").get("dynamic_listeners", []):
        state = entry.get("active_state") or {}
        if "listener" in state:
            listeners[state["listener"]["name"]] = state["listener"]
    routes = {r["route_config"]["name"]: r["route_config"]
              for r in config_of(config, "route").get("dynamic_route_configs", []) if "route_config" in r}
    return {"clusters": clusters, "listeners": listeners, "routes": routes}


def differences(want: dict[str, Any], got: dict[str, Any], kind: str) -> list[str]:
    """A unified diff (control plane's view first) of the resources that differ; [] when they match."""
    import difflib  # only `proxy-status PROXY` diffs
    out: list[str] = []
    for name in sorted(set(want) | set(got)):
        a, b = want.get(name), got.get(name)
        if a == b:
            continue
        left = json.dumps(a, indent=2, sort_keys=True).splitlines() if a is not None else []
        right = json.dumps(b, indent=2, sort_keys=True).splitlines() if b is not None else []
        out.extend(difflib.unified_diff(left, right, f"control plane {kind} {name}", f"envoy {kind} {name}",
                                        lineterm="", n=2))
    return out


def rds_names(listeners: dict[str, Any]) -> set[str]:
    """Route config names the listeners ask for over RDS (a proxy holds only the routes it subscribed to)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rds = node.get("rds")
            if isinstance(rds, dict) and "route_config_name" in rds:
                found.add(str(rds["route_config_name"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(listeners)
    return found
