"""`sailmesh explain`'s reasoning: one request walked through the generated Envoy config, hop by hop. Pure.

Inputs are the control plane's per-proxy config dumps (the JSON of /debug/config_dump: listeners, routes,
clusters, endpoints by name), the source Envoy's /clusters (health and outlier state as that Envoy sees them) and
the source's mTLS identity. The output is a plain dict (printed as steps, or as JSON with `-o json`):

  listener -> route (every route tried, and why it did or did not match) -> action (clusters and weights,
  timeout, retries, faults) -> per cluster: endpoints (EDS health, Envoy's health, outlier ejection) and the TLS
  mode of the hop -> per destination proxy: the inbound filter chain the hop lands on and the RBAC decision.

Route matching is routematch.py, RBAC is rbaceval.py; this module only finds the pieces and joins them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401  (registers the Any type for parsing)
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from google.protobuf import descriptor_pool, json_format

from sailmesh.explain import explain_filters, explain_jwt, rbaceval, routematch
from sailmesh.explain.refs import config_ref
from sailmesh.explain.routematch import Request

HCM = "envoy.filters.network.http_connection_manager"
RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
NETWORK_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
OUTBOUND_PORT = 15001  # the sidecar's HTTP proxy listener (virtualOutbound)
ISTIO_ALPN = "istio"


def _known(node: Any) -> Any:
    """The JSON with every Any whose type this process does not know dropped (they are not needed here)."""
    pool = descriptor_pool.Default()
    if isinstance(node, dict):
        t = node.get("@type")
        if isinstance(t, str):
            try:
                pool.FindMessageTypeByName(t.rsplit("/", 1)[-1])
            except KeyError:
                return None
        out = {}
        for k, v in node.items():
            kept = _known(v)
            if kept is not None or v is None:
                out[k] = kept
        return out
    if isinstance(node, list):
        return [x for x in (_known(v) for v in node) if x is not None]
    return node


def route_config(data: Mapping[str, Any]) -> route_pb2.RouteConfiguration:
    """A RouteConfiguration from its dump JSON (unknown extension types ignored)."""
    return json_format.ParseDict(_known({k: v for k, v in data.items() if k != "@type"}),
                                 route_pb2.RouteConfiguration(), ignore_unknown_fields=True)


def rbac_config(data: Mapping[str, Any]) -> http_rbac.RBAC:
    return json_format.ParseDict(_known({k: v for k, v in data.items() if k != "@type"}), http_rbac.RBAC(),
                                 ignore_unknown_fields=True)


def _address(lis: Mapping[str, Any]) -> tuple[str, int]:
    sock = lis.get("address", {}).get("socket_address", {})
    return str(sock.get("address", "")), int(sock.get("port_value", 0))


def _hcm(chain: Mapping[str, Any]) -> dict[str, Any] | None:
    for f in chain.get("filters", []):
        if f.get("name") == HCM or str(f.get("typed_config", {}).get("@type", "")).endswith("HttpConnectionManager"):
            return dict(f.get("typed_config", {}))
    return None


def outbound_listener(listeners: Mapping[str, Any], port: int, sidecar: bool) -> tuple[str, dict[str, Any]] | None:
    """The listener the request enters: a sidecar's HTTP proxy listener (its app sends through HTTP_PROXY), a
    gateway's listener bound to the request's port."""
    bound = [(n, lis) for n, lis in listeners.items() if _address(lis)[1] == port
             and any(_hcm(c) for c in lis.get("filter_chains", []))]
    if not sidecar:
        if not bound and port < 1024:  # a Gateway server on 80 binds 8080 here (generate.names.gateway_bind_port)
            from sailmesh.generate.names import gateway_bind_port

            return outbound_listener(listeners, gateway_bind_port(port), sidecar)
        return bound[0] if bound else None
    return next(((n, lis) for n, lis in listeners.items() if _address(lis)[1] == OUTBOUND_PORT
                 or n == "virtualOutbound"), None)


def _plain_chain(lis: Mapping[str, Any]) -> dict[str, Any] | None:
    chains = [*lis.get("filter_chains", []), *([lis["default_filter_chain"]] if lis.get("default_filter_chain")
                                               else [])]
    plain = [c for c in chains if (c.get("filter_chain_match") or {}).get("transport_protocol", "raw_buffer")
             == "raw_buffer" and not (c.get("filter_chain_match") or {}).get("server_names")]
    return dict(plain[0]) if plain else None


def _routes_of(hcm: Mapping[str, Any], routes: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    if "route_config" in hcm:
        return str(hcm["route_config"].get("name", "(inline)")), dict(hcm["route_config"])
    name = str(hcm.get("rds", {}).get("route_config_name", ""))
    return name, (dict(routes[name]) if name in routes else None)


def _endpoints(cla: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for locality in (cla or {}).get("endpoints", []):
        for lb in locality.get("lb_endpoints", []):
            sock = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
            meta = lb.get("metadata", {}).get("filter_metadata", {}).get("envoy.transport_socket_match", {})
            out.append({"address": f"{sock.get('address', '')}:{sock.get('port_value', '')}",
                        "ip": str(sock.get("address", "")), "port": int(sock.get("port_value", 0)),
                        "eds_health": str(lb.get("health_status", "HEALTHY")), "tls_match": dict(meta),
                        "locality": locality.get("locality", {})})
    return out


def _envoy_hosts(envoy_clusters: Mapping[str, Any], cluster: str) -> dict[str, dict[str, Any]]:
    for c in envoy_clusters.get("cluster_statuses", []):
        if c.get("name") == cluster:
            hosts = {}
            for h in c.get("host_statuses", []):
                sock = h.get("address", {}).get("socket_address", {})
                hosts[f"{sock.get('address', '')}:{sock.get('port_value', '')}"] = dict(h.get("health_status", {}))
            return hosts
    return {}


def tls_for(cluster: Mapping[str, Any], endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The transport socket the source uses toward this endpoint: the cluster's transport_socket_matches against
    the endpoint's `envoy.transport_socket_match` metadata (Istio's auto mTLS), else the cluster's socket."""
    socket = None
    for m in cluster.get("transport_socket_matches", []):
        if all(endpoint.get("tls_match", {}).get(k) == v for k, v in (m.get("match") or {}).items()):
            socket, via = m.get("transport_socket", {}), f"transport socket match {m.get('name', '')!r}"
            break
    else:
        socket, via = cluster.get("transport_socket"), "the cluster's transport socket"
    tc = (socket or {}).get("typed_config", {})
    if not socket or "UpstreamTlsContext" not in str(tc.get("@type", "")):
        return {"mode": "plaintext", "via": via if socket else "no transport socket", "alpn": [], "sni": "",
                "server_identity": []}
    common = tc.get("common_tls_context", {})
    mutual = bool(common.get("tls_certificate_sds_secret_configs") or common.get("tls_certificates"))
    sans = [s.get("matcher", {}).get("exact") or str(s.get("matcher", {}))
            for s in common.get("combined_validation_context", {}).get("default_validation_context", {})
            .get("match_typed_subject_alt_names", [])]
    alpn = list(common.get("alpn_protocols", []))
    istio = ISTIO_ALPN in alpn
    mode = "ISTIO_MUTUAL (mesh mTLS)" if istio and mutual else "MUTUAL" if mutual else "SIMPLE (TLS)"
    return {"mode": mode, "via": via, "alpn": alpn, "sni": str(tc.get("sni", "")), "server_identity": sans,
            "mutual": mutual}


def inbound_chain(listeners: Mapping[str, Any], ip: str, port: int, tls: Mapping[str, Any]) -> dict[str, Any]:
    """The destination's inbound listener and filter chain the hop lands on (TLS or plaintext chain)."""
    lis = next((lis for lis in listeners.values() if _address(lis) in ((ip, port), ("0.0.0.0", port))), None)
    if lis is None:
        return {"error": f"the destination has no inbound listener on {ip}:{port}: connection refused (UF, URX)"}
    sent_tls = tls.get("mode") != "plaintext"
    for chain in lis.get("filter_chains", []):
        m = chain.get("filter_chain_match") or {}
        proto = m.get("transport_protocol", "")
        if proto == ("tls" if sent_tls else "raw_buffer") or not proto:
            if sent_tls and m.get("application_protocols") and not set(m["application_protocols"]) & set(
                    tls.get("alpn", [])):
                continue
            accepts = "mutual TLS" if proto == "tls" else "plaintext" if proto == "raw_buffer" else "any"
            return {"listener": str(lis.get("name", "")), "match": m, "accepts": accepts, "chain": chain}
    modes = sorted({(c.get("filter_chain_match") or {}).get("transport_protocol", "any")
                    for c in lis.get("filter_chains", [])})
    sent = "mutual TLS" if sent_tls else "plaintext"
    return {"error": f"the destination listener {lis.get('name', '')} accepts only {', '.join(modes)} but the "
                     f"source sends {sent}: the connection is reset (UC/UF); check PeerAuthentication and the "
                     "DestinationRule's tls mode"}


def per_filter(rdata: Mapping[str, Any] | None, sel: routematch.Selection | None, name: str) -> dict[str, Any] | None:
    """The chosen route's per-filter config of filter `name` (JSON), else its virtual host's; None when neither."""
    if rdata is None or sel is None or sel.virtual_host is None or sel.chosen is None:
        return None
    vh: Mapping[str, Any] = next((v for v in rdata.get("virtual_hosts", [])
                                  if v.get("name") == sel.virtual_host.name), {})
    routes = vh.get("routes", [])
    route = routes[sel.chosen.index] if sel.chosen.index < len(routes) else {}
    found = route.get("typed_per_filter_config", {}).get(name) or vh.get("typed_per_filter_config", {}).get(name)
    return dict(found) if found else None


def network_authorization(chain: Mapping[str, Any], req: Request, conn: rbaceval.Connection) -> dict[str, Any]:
    """A TCP chain's network RBAC filters in order (AuthorizationPolicy on a TCP port): the first denial closes
    the connection; a CUSTOM policy's network ext_authz asks its gRPC provider."""
    steps: list[dict[str, Any]] = []
    external = ""
    for f in chain.get("filters", []):
        if f.get("name") == NETWORK_EXT_AUTHZ_FILTER:
            external = explain_filters.provider_of(explain_filters.plain(f.get("typed_config", {})))
            steps.append({"filter": "ext_authz (CUSTOM)", "decision": f"asks {external} when a CUSTOM rule matches; "
                          "a denial closes the connection"})
        if f.get("name") != NETWORK_RBAC_FILTER:
            continue
        cfg = json_format.ParseDict(_known({k: v for k, v in f.get("typed_config", {}).items() if k != "@type"}),
                                    net_rbac.RBAC(), ignore_unknown_fields=True)
        if cfg.shadow_rules_stat_prefix == explain_filters.EXT_AUTHZ_SHADOW_PREFIX:
            continue
        for rules, dry in ((cfg.rules, False), (cfg.shadow_rules, True)):
            if not (cfg.HasField("shadow_rules") if dry else cfg.HasField("rules")):
                continue
            d = rbaceval.decide(rules, req, conn)
            steps.append({"filter": f"rbac {d.action}" + (" (dry-run, not enforced)" if dry else ""),
                          "allowed": d.allowed, "policy": rbaceval.policy_label(d.policy) if d.policy else "",
                          "decision": d.reason})
            if not d.allowed and not dry:
                return {"allowed": False, "status": "closed", "steps": steps, "unknown": conn.unknown,
                        "decision": f"connection closed by RBAC ({d.reason})"}
    out: dict[str, Any] = {"allowed": True, "steps": steps, "unknown": conn.unknown,
                           "decision": "allowed" if steps else "allowed: no AuthorizationPolicy applies"}
    if external:
        out["external"] = external
    return out


def authorization(chain: Mapping[str, Any], req: Request, conn: rbaceval.Connection,
                  now: float | None = None) -> dict[str, Any]:
    """The destination's HTTP filters in chain order against the request: jwt_authn (a bad token: 401), the
    CUSTOM provider (ext_authz: who is asked and what the outcome depends on), RBAC (the first denial decides:
    403; claim rules say which claim matched), local rate limits (the bucket; 429 when empty)."""
    hcm = _hcm(chain) or {}
    steps: list[dict[str, Any]] = []
    inline = hcm.get("route_config")
    sel = routematch.select_route(route_config(inline), req) if inline else None
    custom_match: str | None = None
    external = ""
    limits = []
    for f in hcm.get("http_filters", []):
        name = f.get("name")
        if name == explain_jwt.JWT_FILTER:
            jwt = explain_jwt.authenticate(explain_filters.plain(f.get("typed_config", {})), req, now)
            steps.append({"filter": "jwt_authn", "allowed": jwt.allowed, "decision": jwt.decision,
                          "claims": sorted(jwt.payload)})
            if not jwt.allowed:
                return {"allowed": False, "status": 401, "steps": steps, "unknown": conn.unknown,
                        "decision": f"{jwt.decision} (RequestAuthentication: a token, if sent, must be valid)"}
            if jwt.payload:
                conn.metadata[explain_jwt.JWT_FILTER] = {jwt.metadata_key: jwt.payload}
        elif name == EXT_AUTHZ_FILTER:
            step = explain_filters.ext_authz(f.get("typed_config", {}), custom_match)
            steps.append(step)
            external = step["provider"] if step["consulted"] else external
        elif name == explain_filters.LOCAL_RATELIMIT_FILTER:
            step = explain_filters.local_rate_limit(f.get("typed_config", {}), per_filter(
                inline, sel, explain_filters.LOCAL_RATELIMIT_FILTER), req, conn.source_ip)
            steps.append(step)
            limits.extend([step] if step["limited"] else [])
        if name != RBAC_FILTER:
            continue
        cfg = rbac_config(f.get("typed_config", {}))
        if cfg.shadow_rules_stat_prefix == explain_filters.EXT_AUTHZ_SHADOW_PREFIX and cfg.HasField("shadow_rules"):
            custom_match = rbaceval.decide(cfg.shadow_rules, req, conn).policy  # CUSTOM: which rule sends it out
            continue
        if cfg.HasField("rules"):
            d = rbaceval.decide(cfg.rules, req, conn)
            steps.append({"filter": f"rbac {d.action}", "allowed": d.allowed, "policy": rbaceval.policy_label(
                d.policy) if d.policy else "", "decision": d.reason, "checks": list(d.checks)})
            if not d.allowed:
                return {"allowed": False, "status": 403, "steps": steps, "unknown": conn.unknown,
                        "decision": f"403 RBAC: access denied ({d.reason})"}
        if cfg.HasField("shadow_rules"):
            d = rbaceval.decide(cfg.shadow_rules, req, conn)
            steps.append({"filter": f"rbac {d.action} (dry-run, not enforced)", "allowed": d.allowed,
                          "policy": rbaceval.policy_label(d.policy) if d.policy else "", "decision": d.reason,
                          "checks": list(d.checks)})
    out: dict[str, Any] = {"allowed": True, "steps": steps, "unknown": conn.unknown}
    if external:
        out["external"] = external
    if limits:
        out["rate_limited_when_empty"] = [s["bucket"] for s in limits]
    if not steps:
        out["decision"] = "allowed: no AuthorizationPolicy applies"
    elif external:
        out["decision"] = f"allowed unless the external authorizer denies ({external})"
    else:
        out["decision"] = "allowed" + (" (until a rate-limit bucket is empty: 429)" if limits else "")
    return out


def _claims_for_routing(hcm: Mapping[str, Any], req: Request) -> dict[str, Any]:
    """A gateway's jwt_authn payload for the request's token, as the routes see it after the filter cleared the route
    cache (JWT claim-based routing); {} without a filter or a verified token."""
    for f in hcm.get("http_filters", []):
        if f.get("name") == explain_jwt.JWT_FILTER:
            jwt = explain_jwt.authenticate(explain_filters.plain(f.get("typed_config", {})), req, None)
            if jwt.allowed and jwt.payload:
                return {explain_jwt.JWT_FILTER: {jwt.metadata_key: jwt.payload}}
    return {}


def explain(req: Request, source: Mapping[str, Any], envoy_clusters: Mapping[str, Any], principal: str,
            source_ip: str, destinations: Mapping[str, Mapping[str, Any]],
            names: Mapping[str, str], sidecar: bool = True) -> dict[str, Any]:
    """The whole walk. `source`: the source proxy's dump (a sidecar's, else a gateway's); `destinations`: proxy
    IP -> that proxy's dump; `names`: proxy IP -> proxy name (for the endpoints)."""
    port = int(req.authority.rpartition(":")[2]) if req.authority.rpartition(":")[2].isdigit() else 80
    out: dict[str, Any] = {"request": asdict(req) | {"headers": dict(req.headers)}}
    found = outbound_listener(source.get("listeners", {}), port, sidecar)
    if found is None:
        out["error"] = ("the sidecar has no HTTP proxy listener (15001)" if sidecar else
                        f"the gateway has no listener on port {port}: connection refused (is a Gateway server "
                        "bound to that port?)")
        return out
    lname, lis = found
    chain = _plain_chain(lis)
    hcm = _hcm(chain) if chain else None
    if hcm is None:
        out["error"] = f"listener {lname} has no HTTP filter chain for a plaintext request"
        return out
    rname, rdata = _routes_of(hcm, source.get("routes", {}))
    out["listener"] = {"name": lname, "address": "{}:{}".format(*_address(lis)), "route_config": rname,
                       "http_filters": [f.get("name", "") for f in hcm.get("http_filters", [])]}
    if rdata is None:
        out["error"] = f"route config {rname!r} is not in the control plane's config for this proxy"
        return out
    sel = routematch.select_route(route_config(rdata), req, {} if sidecar else _claims_for_routing(hcm, req))
    out["virtual_host"] = {"name": sel.virtual_host.name if sel.virtual_host else "", "reason": sel.host_reason}
    out["routes_tried"] = [{"index": v.index, "name": v.name, "matched": v.matched, "reason": v.reason}
                           for v in sel.tried]
    if sel.chosen is None:
        out["result"] = "404 Not Found, response flag NR: no route matches"
        return out
    oc = routematch.outcome(sel.chosen.route, sel.virtual_host)
    out["route"] = {"name": sel.chosen.name, "timeout": oc.timeout, "retries": oc.retries, "faults": list(oc.faults),
                    "other": list(oc.other), "config": _config_ref(sel)}
    limits = [explain_filters.local_rate_limit(f.get("typed_config", {}), per_filter(
        rdata, sel, explain_filters.LOCAL_RATELIMIT_FILTER), req, source_ip)
        for f in hcm.get("http_filters", []) if f.get("name") == explain_filters.LOCAL_RATELIMIT_FILTER]
    if limits:
        out["source_filters"] = limits
    out["clusters"] = [_cluster(d, source, envoy_clusters, principal, source_ip, destinations, names, req)
                       for d in oc.destinations]
    out["result"] = _result(oc, out["clusters"], out.get("source_filters"))
    return out


def _config_ref(sel: routematch.Selection) -> str:
    """The VirtualService behind the route (Istio's `istio.config` metadata as NAME.NS), "-" when none."""
    if sel.chosen is None:
        return "-"
    return config_ref(json_format.MessageToDict(sel.chosen.route.metadata, preserving_proto_field_name=True))


def _cluster(d: routematch.Destination, source: Mapping[str, Any], envoy_clusters: Mapping[str, Any],
             principal: str, source_ip: str, destinations: Mapping[str, Mapping[str, Any]],
             names: Mapping[str, str], req: Request) -> dict[str, Any]:
    c = source.get("clusters", {}).get(d.cluster)
    parts = d.cluster.split("|")
    entry: dict[str, Any] = {"name": d.cluster, "weight": f"{d.percent:g}%",
                             "subset": parts[2] if len(parts) == 4 else "", "endpoints": []}
    if c is None:
        entry["error"] = "cluster not found in the source's config: 503 NC (no cluster)"
        return entry
    entry["type"] = str(c.get("type", "EDS"))
    if d.cluster in ("PassthroughCluster", "BlackHoleCluster"):
        entry["note"] = ("sent to the original destination, outside the mesh" if d.cluster == "PassthroughCluster"
                         else "dropped: 502 (BlackHoleCluster, outboundTrafficPolicy REGISTRY_ONLY)")
        return entry
    hosts = _envoy_hosts(envoy_clusters, d.cluster)
    for ep in _endpoints(source.get("endpoints", {}).get(d.cluster)):
        seen = hosts.get(ep["address"], {})
        tls = tls_for(c, ep)
        row: dict[str, Any] = {"address": ep["address"], "proxy": names.get(ep["ip"], ""),
                               "eds_health": ep["eds_health"],
                               "envoy_health": str(seen.get("eds_health_status", "not in Envoy's /clusters"
                                                            if envoy_clusters else "unknown")),
                               "outlier_ejected": bool(seen.get("failed_outlier_check")), "tls": tls}
        dest = destinations.get(ep["ip"])
        if dest is not None:
            landing = inbound_chain(dest.get("listeners", {}), ep["ip"], ep["port"], tls)
            row["inbound"] = {k: v for k, v in landing.items() if k != "chain"}
            if "chain" in landing:
                conn = rbaceval.Connection(principal=principal if tls.get("mutual") else "", source_ip=source_ip,
                                           destination_ip=ep["ip"], destination_port=ep["port"], sni=req.sni)
                row["authorization"] = authorization(landing["chain"], req, conn) if _hcm(landing["chain"]) \
                    else network_authorization(landing["chain"], req, conn)
        entry["endpoints"].append(row)
    return entry


def _share(fault: str) -> float:
    """The percentage of requests a fault (as routematch words it: `... for 50% of requests`) applies to."""
    return float(fault.split(" for ", 1)[1].split("%", 1)[0])


def _result(oc: routematch.Outcome, clusters: list[dict[str, Any]],
            source_limits: list[dict[str, Any]] | None = None) -> str:
    """The most likely answer in one line, as the user would see it; faults below 100% as probabilities."""
    aborts = [f for f in oc.faults if f.startswith("abort")]
    for f in aborts:
        if _share(f) >= 100:
            return f"{f.split(' for ')[0]} (fault injection, response flag FI)"
    chance = "".join(f"; each request has a {_share(f):g}% chance of {f.split(' for ')[0]} instead (fault "
                     "injection, response flag FI)" for f in aborts)
    delays = [f for f in oc.faults if f.startswith("delay")]
    delay = "".join(f" (after a {f.split(' for ')[0]})" if _share(f) >= 100 else
                    f" (each request has a {_share(f):g}% chance of a {f.split(' for ')[0]} first, response flag DI)"
                    for f in delays)
    limited = [s for s in source_limits or [] if s.get("limited")]
    if limited:
        chance += f"; at the source: {limited[0]['status']} (RL) once its rate-limit bucket is empty"
    if oc.other and not oc.destinations:
        return oc.other[0] + chance
    results = []
    for c in clusters:
        if c.get("error"):
            results.append(f"{c['name']}: {c['error']}")
            continue
        if c.get("note"):
            results.append(f"{c['name']}: {c['note']}")
            continue
        usable = [e for e in c["endpoints"] if e["eds_health"] in ("HEALTHY", "UNKNOWN") and not e["outlier_ejected"]]
        if not usable:
            results.append(f"{c['name']}: 503 no healthy upstream (response flag UH): no usable endpoint")
            continue
        blocked = [e for e in usable if "error" in e.get("inbound", {})]
        denied = [e for e in usable if e.get("authorization", {}).get("allowed") is False]
        if blocked and len(blocked) == len(usable):
            results.append(f"{c['name']}: 503 upstream connect error (UF/UC): {blocked[0]['inbound']['error']}")
        elif denied and len(denied) == len(usable):
            results.append(f"{c['name']}: {denied[0]['authorization']['decision']}")
        else:
            text = f"{c['name']}: forwarded to {', '.join(e['proxy'] or e['address'] for e in usable)}"
            external = {e["authorization"]["external"] for e in usable if e.get("authorization", {}).get("external")}
            if external:
                text += f" if the external authorizer allows it ({', '.join(sorted(external))})"
            if any(e.get("authorization", {}).get("rate_limited_when_empty") for e in usable):
                text += "; 429 (RL) once the destination's rate-limit bucket is empty"
            results.append(text)
    return "; ".join(results) + delay + chance


def rbac_rules(listeners: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every RBAC rule of a proxy's inbound chains (x authz check), once per distinct filter config."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for lname, lis in sorted(listeners.items()):
        for chain in lis.get("filter_chains", []):
            for f in (_hcm(chain) or {}).get("http_filters", []):
                if f.get("name") != RBAC_FILTER:
                    continue
                cfg = rbac_config(f.get("typed_config", {}))
                key = cfg.SerializeToString(deterministic=True).hex()
                if key in seen:
                    continue
                seen.add(key)
                for rules, dry in ((cfg.rules, False), (cfg.shadow_rules, True)):
                    if (cfg.HasField("shadow_rules") if dry else cfg.HasField("rules")):
                        rows.extend({"listener": lname, **asdict(r)} for r in rbaceval.rule_rows(rules, dry))
    return rows

