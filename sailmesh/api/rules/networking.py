"""Istio's Go-side checks for networking.istio.io kinds (pkg/config/validation semantics)."""

from __future__ import annotations

from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import (
    check_duration,
    check_export_to,
    check_percent,
    check_port,
    check_selector_labels,
    check_string_match,
    host_error,
    is_cidr,
    is_dns1123_label,
    regex_error,
)

RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
GATEWAY_PROTOCOLS = frozenset({"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS",
                               "MYSQL", "THRIFT", "UDP"})


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


# ---------------------------------------------------------------- VirtualService

def _check_destination(sink: IssueSink, path: str, dest: Any) -> None:
    d = _dict(dest)
    if "host" not in d:
        return  # the schema reports the missing field
    host = d.get("host")
    # Istio's validateDestination: "*" alone is refused, a wildcard domain (*.example.com) is allowed
    err = f"invalid destination host {host}" if host == "*" else host_error(host)
    if err:
        sink.add(f"{path}.host", err)
    subset = d.get("subset")
    if subset is not None and not is_dns1123_label(subset):
        sink.add(f"{path}.subset", f"invalid subset name {subset!r}: must be a DNS-1123 label")
    port = _dict(d.get("port"))
    if "number" in port:
        check_port(sink, f"{path}.port.number", port["number"])


def _check_weights(sink: IssueSink, path: str, routes: list[Any]) -> None:
    weights = [_dict(r).get("weight") for r in routes]
    total = 0
    for i, w in enumerate(weights):
        if isinstance(w, int) and not isinstance(w, bool):
            if not 0 <= w <= 100:
                sink.add(f"{path}[{i}].weight", "must be between 0 and 100")
            total += w
    explicit = [w for w in weights if w is not None]
    if len(routes) > 1 and total == 0:
        sink.add(path, "total destination weight = 0")
    elif (len(routes) > 1 or explicit) and total != 100 and explicit:
        sink.warn(path, f"destination weights sum to {total}, not 100 (Istio treats them as relative proportions)")


def _check_headers(sink: IssueSink, path: str, headers: Any) -> None:
    for section in ("request", "response"):
        ops = _dict(_dict(headers).get(section))
        for op in ("set", "add"):
            for name in _dict(ops.get(op)):
                if not name or (name.lower() in ("host", ":authority") and section == "response"):
                    sink.add(f"{path}.{section}.{op}.{name}", f"invalid header name {name!r}")
        for i, name in enumerate(_list(ops.get("remove"))):
            if not name:
                sink.add(f"{path}.{section}.remove[{i}]", "header name must not be empty")


def _check_http_route(sink: IssueSink, path: str, route: dict[str, Any], delegate: bool) -> None:
    has_route, has_redirect = "route" in route, "redirect" in route
    has_direct, has_delegate = "directResponse" in route, "delegate" in route
    if sum((has_route, has_redirect, has_direct, has_delegate)) == 0:
        sink.add(path, "HTTP route, redirect, direct response or delegate is required")
    if has_redirect and (has_route or has_direct):
        sink.add(path, "HTTP route cannot contain both route and redirect (or direct response)")
    if has_direct and has_route:
        sink.add(path, "HTTP route cannot contain both route and direct response")
    if has_delegate and (has_route or has_redirect or has_direct):
        sink.add(path, "HTTP route with delegate cannot have route, redirect or direct response")
    if delegate and has_delegate:
        sink.add(f"{path}.delegate", "a delegate VirtualService cannot delegate again")
    if has_redirect and "rewrite" in route:
        sink.add(path, "HTTP route rule cannot contain both rewrite and redirect")
    for i, m in enumerate(_list(route.get("match"))):
        mp = f"{path}.match[{i}]"
        md = _dict(m)
        for f in ("uri", "scheme", "method", "authority"):
            check_string_match(sink, f"{mp}.{f}", md.get(f))
        for group in ("headers", "queryParams", "withoutHeaders"):
            for name, sm in _dict(md.get(group)).items():
                if group != "queryParams" and name != name.lower():
                    sink.add(f"{mp}.{group}.{name}", f"header match name {name!r} must be lowercase")
                check_string_match(sink, f"{mp}.{group}.{name}", sm)
        if "port" in md:
            check_port(sink, f"{mp}.port", md["port"])
        if delegate and "gateways" in md:
            sink.add(f"{mp}.gateways", "gateways cannot be set in a delegate VirtualService match")
    routes = _list(route.get("route"))
    for i, dest in enumerate(routes):
        _check_destination(sink, f"{path}.route[{i}].destination", _dict(dest).get("destination"))
        _check_headers(sink, f"{path}.route[{i}].headers", _dict(dest).get("headers"))
    if routes:
        _check_weights(sink, f"{path}.route", routes)
    if "timeout" in route:
        check_duration(sink, f"{path}.timeout", route["timeout"], minimum=0.0)
    retries = _dict(route.get("retries"))
    if retries:
        attempts = retries.get("attempts")
        if isinstance(attempts, int) and attempts < 0:
            sink.add(f"{path}.retries.attempts", "attempts cannot be negative")
        if attempts == 0 and any(k in retries for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
            sink.warn(f"{path}.retries", "http retry policy configured when attempts are set to 0 (disabled)")
        if "perTryTimeout" in retries:
            check_duration(sink, f"{path}.retries.perTryTimeout", retries["perTryTimeout"])
        retry_on = retries.get("retryOn")
        if isinstance(retry_on, str) and retry_on:
            for part in retry_on.split(","):
                p = part.strip()
                if p and p not in RETRY_ON and not (p.isdigit() and 100 <= int(p) <= 599):
                    sink.add(f"{path}.retries.retryOn", f"{p!r} is not a valid retryOn policy or HTTP status code")
    fault = _dict(route.get("fault"))
    delay, abort = _dict(fault.get("delay")), _dict(fault.get("abort"))
    if "fault" in route and not delay and not abort:
        sink.add(f"{path}.fault", "fault must have at least delay or abort")
    if delay:
        fixed = delay.get("fixedDelay")
        if fixed is None and "exponentialDelay" not in delay:
            # Istio accepts it, but the delay has no length and Envoy needs one: warn
            sink.warn(f"{path}.fault.delay", "delay without fixedDelay injects no delay")
        elif fixed is not None:
            check_duration(sink, f"{path}.fault.delay.fixedDelay", fixed)
        check_percent(sink, f"{path}.fault.delay.percentage", delay.get("percentage"))
        if "percent" in delay:
            check_percent(sink, f"{path}.fault.delay.percent", delay["percent"])
    if abort:
        status = abort.get("httpStatus")
        if isinstance(status, int) and not 200 <= status <= 599:
            sink.add(f"{path}.fault.abort.httpStatus", f"invalid abort HTTP status {status}: must be 200..599")
        check_percent(sink, f"{path}.fault.abort.percentage", abort.get("percentage"))
    if "mirror" in route:
        _check_destination(sink, f"{path}.mirror", route["mirror"])
    if "mirrorPercentage" in route:
        check_percent(sink, f"{path}.mirrorPercentage", route["mirrorPercentage"])
    for i, m in enumerate(_list(route.get("mirrors"))):
        _check_destination(sink, f"{path}.mirrors[{i}].destination", _dict(m).get("destination"))
        check_percent(sink, f"{path}.mirrors[{i}].percentage", _dict(m).get("percentage"))
    if "mirror" in route and "mirrors" in route:
        sink.add(path, "only one of mirror or mirrors can be set")
    redirect = _dict(route.get("redirect"))
    code = redirect.get("redirectCode")
    if code is not None and (not isinstance(code, int) or code not in REDIRECT_CODES):
        sink.add(f"{path}.redirect.redirectCode", f"redirect code {code} must be one of 301, 302, 303, 307, 308")
    if "port" in redirect and "derivePort" in redirect:
        sink.add(f"{path}.redirect", "only one of port or derivePort can be set")
    rewrite = _dict(route.get("rewrite"))
    if "uri" in rewrite and "uriRegexRewrite" in rewrite:
        sink.add(f"{path}.rewrite", "only one of uri or uriRegexRewrite can be set")
    rx = _dict(rewrite.get("uriRegexRewrite"))
    if isinstance(rx.get("match"), str):
        err = regex_error(rx["match"])
        if err:
            sink.add(f"{path}.rewrite.uriRegexRewrite.match", err)
    cors = _dict(route.get("corsPolicy"))
    for i, o in enumerate(_list(cors.get("allowOrigins"))):
        check_string_match(sink, f"{path}.corsPolicy.allowOrigins[{i}]", o)
    if "maxAge" in cors:
        check_duration(sink, f"{path}.corsPolicy.maxAge", cors["maxAge"], minimum=0.0)
    _check_headers(sink, f"{path}.headers", route.get("headers"))


def _check_gateway_name(sink: IssueSink, path: str, g: Any) -> None:
    """Istio's validateGatewayNames: `namespace/name` (both DNS-1123 labels), or a legacy FQDN / `mesh`."""
    if not isinstance(g, str):
        return
    ns, sep, name = g.partition("/")
    if not sep:
        if "." in g:
            parts = g.split(".")
            sink.warn(path, f"using legacy gatewayName format {g!r}; prefer the <namespace>/<name> format: "
                            f"'{parts[1]}/{parts[0]}'")
        err = host_error(g, allow_wildcard=False, allow_ip=False)
        if err:
            sink.add(path, err)
        return
    if not ns or not name:
        sink.add(path, "config namespace and gateway name cannot be empty")
        return
    if not is_dns1123_label(ns):
        sink.add(path, f"invalid value for namespace: {ns!r}")
    if not is_dns1123_label(name):
        sink.add(path, f"invalid value for gateway name: {name!r}")


def check_virtual_service(sink: IssueSink, spec: dict[str, Any]) -> None:
    hosts = _list(spec.get("hosts"))
    delegate = not hosts
    if delegate and spec.get("gateways"):
        sink.add("spec.gateways", "a delegate VirtualService (no hosts) must not have gateways")
    for i, h in enumerate(hosts):
        err = host_error(h)
        if err:
            sink.add(f"spec.hosts[{i}]", err)
    for i, g in enumerate(_list(spec.get("gateways"))):
        _check_gateway_name(sink, f"spec.gateways[{i}]", g)
    if not any(k in spec for k in ("http", "tcp", "tls")):
        sink.add("spec", "http, tcp or tls must be provided in virtual service")
    for i, r in enumerate(_list(spec.get("http"))):
        if isinstance(r, dict):
            _check_http_route(sink, f"spec.http[{i}]", r, delegate)
    for proto in ("tcp", "tls"):
        for i, r in enumerate(_list(spec.get(proto))):
            rd = _dict(r)
            routes = _list(rd.get("route"))
            if not routes:
                sink.add(f"spec.{proto}[{i}].route", f"{proto.upper()} route is required")
            for j, dest in enumerate(routes):
                _check_destination(sink, f"spec.{proto}[{i}].route[{j}].destination", _dict(dest).get("destination"))
            if routes:
                _check_weights(sink, f"spec.{proto}[{i}].route", routes)
            if proto == "tls":
                for j, m in enumerate(_list(rd.get("match"))):
                    if not _list(_dict(m).get("sniHosts")):
                        sink.add(f"spec.tls[{i}].match[{j}].sniHosts", "TLS match must have at least one SNI host")
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"))


# ---------------------------------------------------------------- DestinationRule

def _check_traffic_policy(sink: IssueSink, path: str, tp: Any) -> None:
    tp = _dict(tp)
    od = _dict(tp.get("outlierDetection"))
    for f in ("maxEjectionPercent", "minHealthPercent"):
        if f in od and isinstance(od[f], int) and not 0 <= od[f] <= 100:
            sink.add(f"{path}.outlierDetection.{f}", f"{f} must be between 0 and 100")
    for f in ("interval", "baseEjectionTime"):
        if f in od:
            check_duration(sink, f"{path}.outlierDetection.{f}", od[f])
    cp = _dict(tp.get("connectionPool"))
    tcp = _dict(cp.get("tcp"))
    if "connectTimeout" in tcp:
        check_duration(sink, f"{path}.connectionPool.tcp.connectTimeout", tcp["connectTimeout"])
    http = _dict(cp.get("http"))
    if "idleTimeout" in http:
        check_duration(sink, f"{path}.connectionPool.http.idleTimeout", http["idleTimeout"])
    lb = _dict(tp.get("loadBalancer"))
    ch = _dict(lb.get("consistentHash"))
    cookie = _dict(ch.get("httpCookie"))
    if cookie and "ttl" in cookie:
        check_duration(sink, f"{path}.loadBalancer.consistentHash.httpCookie.ttl", cookie["ttl"], minimum=0.0)
    tls = _dict(tp.get("tls"))
    if tls.get("mode") == "MUTUAL" and not tls.get("credentialName"):
        for f in ("clientCertificate", "privateKey"):
            if not tls.get(f):
                sink.add(f"{path}.tls.{f}", f"{f} is required for mutual TLS (or set credentialName)")
    if tls.get("credentialName") and any(tls.get(f) for f in ("clientCertificate", "privateKey", "caCertificates")):
        sink.add(f"{path}.tls", "cannot specify client certificates or CA certificate with credentialName")
    for i, pls in enumerate(_list(tp.get("portLevelSettings"))):
        p = f"{path}.portLevelSettings[{i}]"
        port = _dict(_dict(pls).get("port"))
        if not port:
            sink.add(f"{p}.port", "portLevelSettings must specify a port")
        elif "number" in port:
            check_port(sink, f"{p}.port.number", port["number"])
        _check_traffic_policy(sink, p, pls)


def check_destination_rule(sink: IssueSink, spec: dict[str, Any]) -> None:
    if "host" in spec:
        err = host_error(spec.get("host"))
        if err:
            sink.add("spec.host", err)
    _check_traffic_policy(sink, "spec.trafficPolicy", spec.get("trafficPolicy"))
    names: set[str] = set()
    for i, s in enumerate(_list(spec.get("subsets"))):
        sd = _dict(s)
        name = sd.get("name")
        if not is_dns1123_label(name):
            sink.add(f"spec.subsets[{i}].name", f"invalid subset name {name!r}: must be a DNS-1123 label")
        elif name in names:
            sink.add(f"spec.subsets[{i}].name", f"duplicate subset name {name!r}")
        else:
            names.add(name)
        check_selector_labels(sink, f"spec.subsets[{i}].labels", sd.get("labels"))
        _check_traffic_policy(sink, f"spec.subsets[{i}].trafficPolicy", sd.get("trafficPolicy"))
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"))


# ---------------------------------------------------------------- Gateway

def _check_gateway_host(sink: IssueSink, path: str, host: Any) -> None:
    if not isinstance(host, str):
        return
    ns, sep, name = host.rpartition("/")
    if sep:
        if ns not in ("*", ".") and not is_dns1123_label(ns):
            sink.add(path, f"invalid namespace {ns!r} in gateway host {host!r}")
    err = host_error(name)
    if err:
        sink.add(path, err)


def check_gateway(sink: IssueSink, spec: dict[str, Any]) -> None:
    servers = _list(spec.get("servers"))
    if "servers" in spec and not servers:
        sink.add("spec.servers", "gateway must have at least one server")
    names: dict[str, int] = {}
    for i, s in enumerate(servers):
        sd, p = _dict(s), f"spec.servers[{i}]"
        port = _dict(sd.get("port"))
        if "number" in port:
            check_port(sink, f"{p}.port.number", port["number"])
        proto = str(port.get("protocol", "")).upper()
        if proto and proto not in GATEWAY_PROTOCOLS:
            sink.add(f"{p}.port.protocol", f"unrecognized protocol {port.get('protocol')!r}")
        pname = port.get("name")
        if isinstance(pname, str) and pname:
            if pname in names:
                sink.add(f"{p}.port.name", f"port names in servers must be unique: duplicate name {pname}")
            names[pname] = i
        hosts = _list(sd.get("hosts"))
        if "hosts" in sd and not hosts:
            sink.add(f"{p}.hosts", "server config must contain at least one host")
        for j, h in enumerate(hosts):
            _check_gateway_host(sink, f"{p}.hosts[{j}]", h)
        tls = _dict(sd.get("tls"))
        if proto == "HTTPS" and not tls:
            sink.add(f"{p}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        mode = tls.get("mode", "SIMPLE") if tls else None
        if tls and not tls.get("httpsRedirect") and mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            has_cred = tls.get("credentialName") or tls.get("credentialNames") or tls.get("tlsCertificates")
            if not has_cred:
                for f in ("serverCertificate", "privateKey"):
                    if not tls.get(f):
                        sink.add(f"{p}.tls", f"{mode} TLS requires credentialName or {f}")
                if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not tls.get("caCertificates"):
                    sink.add(f"{p}.tls", f"{mode} TLS requires caCertificates (or credentialName)")
        if tls and proto in ("HTTP", "TCP") and mode not in (None,) and not tls.get("httpsRedirect"):
            sink.add(f"{p}.tls", f"TLS settings are only valid for HTTPS/TLS servers, not {proto}")
    check_selector_labels(sink, "spec.selector", spec.get("selector"))


# ---------------------------------------------------------------- ServiceEntry

def check_service_entry(sink: IssueSink, spec: dict[str, Any]) -> None:
    resolution = spec.get("resolution", "NONE")
    for i, h in enumerate(_list(spec.get("hosts"))):
        err = host_error(h, allow_ip=False) if h != "*" else None
        if err:
            sink.add(f"spec.hosts[{i}]", err)
    for i, a in enumerate(_list(spec.get("addresses"))):
        if isinstance(a, str) and not is_cidr(a):
            sink.add(f"spec.addresses[{i}]", f"invalid address {a!r}: must be an IP address or CIDR range")
    port_names: set[str] = set()
    for i, p in enumerate(_list(spec.get("ports"))):
        pd = _dict(p)
        if "number" in pd:
            check_port(sink, f"spec.ports[{i}].number", pd["number"])
        if "targetPort" in pd:
            check_port(sink, f"spec.ports[{i}].targetPort", pd["targetPort"])
        if isinstance(pd.get("name"), str):
            port_names.add(pd["name"])
    for i, e in enumerate(_list(spec.get("endpoints"))):
        ed = _dict(e)
        addr = ed.get("address")
        if isinstance(addr, str) and resolution == "STATIC" and not addr.startswith("unix://") and not is_cidr(addr):
            sink.add(f"spec.endpoints[{i}].address", f"endpoint address {addr!r} must be an IP for STATIC resolution")
        for name, port in _dict(ed.get("ports")).items():
            check_port(sink, f"spec.endpoints[{i}].ports.{name}", port)
            if port_names and name not in port_names:
                sink.add(f"spec.endpoints[{i}].ports.{name}", f"endpoint port {name!r} is not a declared port name")
        check_selector_labels(sink, f"spec.endpoints[{i}].labels", ed.get("labels"))
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not spec.get("endpoints"):
        for i, h in enumerate(_list(spec.get("hosts"))):
            if isinstance(h, str) and h.startswith("*"):
                sink.add(f"spec.hosts[{i}]",
                         f"hosts must be FQDN if no endpoints are provided for resolution mode {resolution}")
    check_selector_labels(sink, "spec.workloadSelector.labels", _dict(spec.get("workloadSelector")).get("labels"))
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"))


# ---------------------------------------------------------------- Sidecar

def check_sidecar(sink: IssueSink, spec: dict[str, Any]) -> None:
    for i, eg in enumerate(_list(spec.get("egress"))):
        egd = _dict(eg)
        for j, h in enumerate(_list(egd.get("hosts"))):
            p = f"spec.egress[{i}].hosts[{j}]"
            if not isinstance(h, str) or "/" not in h:
                sink.add(p, f"sidecar: hosts must be of form namespace/dnsName, got {h!r}")
                continue
            ns, _, name = h.partition("/")
            if ns not in ("*", ".", "~") and not is_dns1123_label(ns):
                sink.add(p, f"invalid namespace {ns!r} in egress host {h!r}")
            if name != "*":
                err = host_error(name, allow_ip=False)
                if err:
                    sink.add(p, err)
        if not _list(egd.get("hosts")) and "hosts" not in egd:
            pass  # the schema reports the required field
        port = _dict(egd.get("port"))
        if "number" in port:
            check_port(sink, f"spec.egress[{i}].port.number", port["number"])
    for i, ing in enumerate(_list(spec.get("ingress"))):
        port = _dict(_dict(ing).get("port"))
        if "number" in port:
            check_port(sink, f"spec.ingress[{i}].port.number", port["number"])
    check_selector_labels(sink, "spec.workloadSelector.labels", _dict(spec.get("workloadSelector")).get("labels"))


# ---------------------------------------------------------------- WorkloadEntry / WorkloadGroup

def check_workload_entry(sink: IssueSink, spec: dict[str, Any], path: str = "spec") -> None:
    for name, port in _dict(spec.get("ports")).items():
        check_port(sink, f"{path}.ports.{name}", port)
    weight = spec.get("weight")
    if isinstance(weight, int) and weight < 0:
        sink.add(f"{path}.weight", "weight must not be negative")


def check_workload_group(sink: IssueSink, spec: dict[str, Any]) -> None:
    check_workload_entry(sink, _dict(spec.get("template")), "spec.template")
    probe = _dict(spec.get("probe"))
    for f in ("httpGet", "tcpSocket"):
        port = _dict(probe.get(f)).get("port")
        if port is not None:
            check_port(sink, f"spec.probe.{f}.port", port)
