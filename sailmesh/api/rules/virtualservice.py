"""Istio's ValidateVirtualService (pkg/config/validation/validation.go + virtualservice.go), function by function."""

from __future__ import annotations

from typing import Any

from sailmesh.api.hosts import host_subset_of, hosts_match
from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_export_to
from sailmesh.api.rules.httproute import (
    as_int,
    check_destination,
    check_http_extras,
    string_match_error,
)
from sailmesh.api.rules.values import (
    check_duration_field,
    check_labels,
    dict_of,
    fqdn_error,
    header_add_set_error,
    header_name_or_claim_error,
    header_operation_error,
    header_value_error,
    ip_subnet_error,
    is_ip,
    is_jwt_claim_header,
    is_label,
    list_of,
    port_error,
    wildcard_domain_error,
)


def check_gateway_names(sink: IssueSink, path: str, names: Any) -> None:
    """validateGatewayNames: `namespace/name` (DNS labels) or a legacy FQDN (warned); Istio stops at the first FQDN."""
    for i, g in enumerate(list_of(names)):
        if not isinstance(g, str):
            continue
        p = f"{path}[{i}]"
        ns, sep, name = g.partition("/")
        if not sep:
            if "." in g:
                parts = g.split(".")
                sink.warn(p, f"using legacy gatewayName format {g!r}; prefer the <namespace>/<name> format: "
                             f"'{parts[1]}/{parts[0]}'")
            err = fqdn_error(g)
            if err:
                sink.add(p, err)
            return
        if not ns or not name:
            sink.add(p, "config namespace and gateway name cannot be empty")
        if not is_label(ns):
            sink.add(p, f"invalid value for namespace: {ns!r}")
        if not is_label(name):
            sink.add(p, f"invalid value for gateway name: {name!r}")


def _check_header_ops(sink: IssueSink, path: str, headers: Any) -> None:
    """The header manipulation checks validateHTTPRoute and validateHTTPRouteDestinations share."""
    for section in ("request", "response"):
        ops = dict_of(dict_of(headers).get(section))
        for op in ("add", "set"):
            for name, value in dict_of(ops.get(op)).items():
                p = f"{path}.{section}.{op}.{name}"
                err = header_add_set_error(name) if section == "request" else header_operation_error(name)
                if err:
                    sink.add(p, err)
                err = header_value_error(value)
                if err:
                    sink.add(p, err)
        for i, name in enumerate(list_of(ops.get("remove"))):
            err = header_operation_error(name) if isinstance(name, str) else None
            if err:
                sink.add(f"{path}.{section}.remove[{i}]", err)


def _check_route_destinations(sink: IssueSink, path: str, routes: list[Any], http: bool) -> None:
    """validateHTTPRouteDestinations / validateRouteDestinations: weights >= 0 (no upper bound), total > 0."""
    total = 0
    for i, r in enumerate(routes):
        p = f"{path}[{i}]"
        rd = dict_of(r)
        if not isinstance(r, dict):
            sink.add(p, "weight may not be nil")
            continue
        if "destination" not in rd:
            sink.add(p, "destination is required")
        if http:
            _check_header_ops(sink, f"{p}.headers", rd.get("headers"))
        check_destination(sink, f"{p}.destination", rd.get("destination"))
        w = as_int(rd.get("weight"))
        if w < 0:
            sink.add(f"{p}.weight", f"weight {w} < 0")
        total += w
    if len(routes) > 1 and total == 0:
        sink.add(path, "total destination weight = 0")
    elif total != 100 and any(dict_of(r).get("weight") is not None for r in routes):
        # sailmesh's own warning (Istio treats weights as relative proportions and says nothing)
        sink.warn(path, f"destination weights sum to {total}, not 100 (Istio treats them as relative proportions)")


def _check_match_request(sink: IssueSink, path: str, matches: list[Any]) -> None:
    """validateHTTPRouteMatchRequest."""
    for i, m in enumerate(matches):
        mp, md = f"{path}[{i}]", dict_of(m)
        for name, sm in dict_of(md.get("headers")).items():
            if sm is None:
                sink.add(f"{mp}.headers.{name}", f"header match {name} cannot be null")
            for err in (header_name_or_claim_error(name), string_match_error(sm, "headers")):
                if err:
                    sink.add(f"{mp}.headers.{name}", err)
        for name, sm in dict_of(md.get("withoutHeaders")).items():
            errs = [header_name_or_claim_error(name)]
            if dict_of(sm).get("regex") != "*":  # `*` means "present", not a regex
                errs.append(string_match_error(sm, "withoutHeaders"))
            for err in errs:
                if err:
                    sink.add(f"{mp}.withoutHeaders.{name}", err)
        checks = [("uri", True), ("scheme", False), ("method", False), ("authority", False)]
        for field, uri in checks:
            err = string_match_error(md.get(field), field, uri=uri)
            if err:
                sink.add(f"{mp}.{field}", err)
        for name, sm in dict_of(md.get("queryParams")).items():
            err = string_match_error(sm, "queryParams")
            if err:
                sink.add(f"{mp}.queryParams.{name}", err)
        _check_l4_match_common(sink, mp, md)


def _check_l4_match_common(sink: IssueSink, mp: str, md: dict[str, Any]) -> None:
    """The port / sourceLabels / gateways / sourceNamespace part every match kind shares."""
    if as_int(md.get("port")):
        err = port_error(md["port"])
        if err:
            sink.add(f"{mp}.port", err)
    check_labels(sink, f"{mp}.sourceLabels", md.get("sourceLabels"))
    check_gateway_names(sink, f"{mp}.gateways", md.get("gateways"))
    ns = md.get("sourceNamespace")
    if isinstance(ns, str) and ns and not is_label(ns):
        sink.add(f"{mp}.sourceNamespace", f"sourceNamespace match {ns} is invalid")


def _check_route_conflict(sink: IssueSink, path: str, r: dict[str, Any], delegate: bool) -> bool:
    """validateHTTPRouteConflict; False for a root route (delegate set), whose other checks Istio still runs."""
    if not delegate and r.get("delegate") is not None:
        name = r.get("name", "")
        if r.get("redirect") is not None:
            sink.add(path, f"root HTTP route {name} must not specify redirect")
        if r.get("route") is not None:
            sink.add(path, f"root HTTP route {name} must not specify route")
        return False
    if delegate and r.get("delegate") is not None:
        sink.add(f"{path}.delegate", "delegate HTTP route cannot contain delegate")
    has = {k: r.get(k) is not None for k in ("redirect", "fault", "rewrite", "directResponse", "mirror")}
    routes = list_of(r.get("route"))
    if has["redirect"]:
        for cond, msg in ((bool(routes), "HTTP route cannot contain both route and redirect"),
                          (has["fault"], "HTTP route cannot contain both fault and redirect"),
                          (has["rewrite"], "HTTP route rule cannot contain both rewrite and redirect"),
                          (has["directResponse"], "HTTP route rule cannot contain both direct_response and redirect")):
            if cond:
                sink.add(path, msg)
    elif has["directResponse"]:
        for cond, msg in ((bool(routes), "HTTP route cannot contain both route and direct_response"),
                          (has["fault"], "HTTP route cannot contain both fault and direct_response"),
                          (has["rewrite"], "HTTP route rule cannot contain both rewrite and direct_response")):
            if cond:
                sink.add(path, msg)
    elif not routes:
        sink.add(path, "HTTP route, redirect or direct_response is required")
    if has["mirror"] and list_of(r.get("mirrors")):
        sink.add(path, "HTTP route cannot contain both mirror and mirrors")
    return True


def check_http_route(sink: IssueSink, path: str, r: dict[str, Any], delegate: bool) -> None:
    """validateHTTPRoute."""
    _check_route_conflict(sink, path, r, delegate)
    _check_match_request(sink, f"{path}.match", list_of(r.get("match")))
    _check_header_ops(sink, f"{path}.headers", r.get("headers"))
    check_http_extras(sink, path, r)
    _check_route_destinations(sink, f"{path}.route", list_of(r.get("route")), http=True)
    if r.get("timeout") is not None:
        check_duration_field(sink, f"{path}.timeout", r["timeout"])


def _is_sni_host(spec: dict[str, Any]) -> bool:
    return any(list_of(dict_of(m).get("sniHosts")) for t in list_of(spec.get("tls"))
               for m in list_of(dict_of(t).get("match")))


def gateway_host_error(domain: Any, sni: bool) -> str | None:
    """agent.ValidateWildcardDomainForVirtualServiceBoundToGateway: SNI hosts may be `outbound_.PORT_._.HOST`."""
    if sni and isinstance(domain, str) and domain.startswith("outbound_") and 0 < len(domain) <= 255:
        parts = domain.split("_")
        if len(parts) < 4:
            return f"domain name {domain} invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' format"
        port, host = parts[1].strip("."), parts[3].strip(".")
        if parts[0] != "outbound":
            return f"domain name {domain!r} invalid (label {parts[0]!r} invalid)"
        if not any(c.isdigit() for c in port):
            return f"domain name {domain!r} invalid (label {port!r} invalid). should follow " \
                   "'outbound_.<PORT>_._.<HOSTNAME>' format"
        if not any(c.isascii() and c.isalpha() for c in host):
            return f"domain name {domain!r} invalid (label {host!r} invalid). should follow " \
                   "'outbound_.<PORT>_._.<HOSTNAME>' format"
        return None
    return wildcard_domain_error(domain)


def _check_l4_routes(sink: IssueSink, spec: dict[str, Any], to_gateway: bool) -> None:
    """validateTLSRoute / validateTLSMatch / validateSniHost and validateTCPRoute / validateTCPMatch."""
    hosts = [h for h in list_of(spec.get("hosts")) if isinstance(h, str)]
    for i, t in enumerate(list_of(spec.get("tls"))):
        p, td = f"spec.tls[{i}]", dict_of(t)
        matches = list_of(td.get("match"))
        if not matches:
            sink.add(f"{p}.match", "TLS route must have at least one match condition")
        for j, m in enumerate(matches):
            mp, md = f"{p}.match[{j}]", dict_of(m)
            if m is None:
                sink.add(mp, "TLS match may not be null")
                continue
            snis = list_of(md.get("sniHosts"))
            if not snis:
                sink.add(f"{mp}.sniHosts", "TLS match must have at least one SNI host")
            for k, sni in enumerate(snis):
                err = gateway_host_error(sni, True) if to_gateway else wildcard_domain_error(sni)
                if err and is_ip(sni):
                    sink.warn(f"{mp}.sniHosts[{k}]", f'using an IP address ("{sni}") goes against SNI spec and '
                                                     "most clients do not support this")
                elif err:
                    sink.add(f"{mp}.sniHosts[{k}]", err)
                elif not any(host_subset_of(sni, h) for h in hosts):
                    sink.add(f"{mp}.sniHosts[{k}]", f'SNI host "{sni}" is not a compatible subset of any of the '
                                                    f"virtual service hosts: [{', '.join(hosts)}]")
            _check_l4_match(sink, mp, md)
        routes = list_of(td.get("route"))
        if not routes:
            sink.add(f"{p}.route", "TLS route is required")
        _check_route_destinations(sink, f"{p}.route", routes, http=False)
    for i, t in enumerate(list_of(spec.get("tcp"))):
        p, td = f"spec.tcp[{i}]", dict_of(t)
        for j, m in enumerate(list_of(td.get("match"))):
            if m is None:
                sink.add(f"{p}.match[{j}]", "tcp match may not be nil")
                continue
            _check_l4_match(sink, f"{p}.match[{j}]", dict_of(m))
        routes = list_of(td.get("route"))
        if not routes:
            sink.add(f"{p}.route", "TCP route is required")
        _check_route_destinations(sink, f"{p}.route", routes, http=False)


def _check_l4_match(sink: IssueSink, mp: str, md: dict[str, Any]) -> None:
    for k, subnet in enumerate(list_of(md.get("destinationSubnets"))):
        err = ip_subnet_error(subnet)
        if err:
            sink.add(f"{mp}.destinationSubnets[{k}]", err)
    _check_l4_match_common(sink, mp, md)


def check_virtual_service(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateVirtualService."""
    hosts = list_of(spec.get("hosts"))
    gateways = list_of(spec.get("gateways"))
    if not hosts:
        for field, msg in (("gateways", "delegate virtual service must have no gateways specified"),
                           ("tls", "delegate virtual service must have no tls route specified"),
                           ("tcp", "delegate virtual service must have no tcp route specified")):
            if list_of(spec.get(field)):
                sink.add(f"spec.{field}", msg)
    to_gateway = False
    if gateways:
        check_gateway_names(sink, "spec.gateways", gateways)
        to_gateway = "mesh" not in gateways
    to_mesh = not to_gateway
    if not to_gateway:
        for i, r in enumerate(list_of(spec.get("http"))):
            for j, m in enumerate(list_of(dict_of(r).get("match"))):
                for group in ("headers", "withoutHeaders"):
                    for key in dict_of(dict_of(m).get(group)):
                        if isinstance(key, str) and is_jwt_claim_header(key):
                            sink.add(f"spec.http[{i}].match[{j}].{group}.{key}",
                                     f"JWT claim based routing (key: {key}) is only supported for gateway, "
                                     f"found no gateways: {gateways}")
    all_valid = True
    sni = _is_sni_host(spec)
    for i, h in enumerate(hosts):
        err = gateway_host_error(h, sni) if to_gateway else wildcard_domain_error(h)
        if err:
            if not is_ip(h):
                sink.add(f"spec.hosts[{i}]", err)
                all_valid = False
        elif to_mesh and h == "*":
            sink.add(f"spec.hosts[{i}]",
                     "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                if isinstance(a, str) and isinstance(b, str) and hosts_match(a, b):
                    sink.add("spec.hosts", f"duplicate hosts in virtual service: {a} & {b}")
    if not any(list_of(spec.get(k)) for k in ("http", "tcp", "tls")):
        sink.add("spec", "http, tcp or tls must be provided in virtual service")
    for i, r in enumerate(list_of(spec.get("http"))):
        if r is None:
            sink.add(f"spec.http[{i}]", "http route may not be null")
        elif isinstance(r, dict):
            check_http_route(sink, f"spec.http[{i}]", r, not hosts)
    # validateSniHost asks isGateway() itself: true unless `mesh` is listed, so also with no gateways at all
    _check_l4_routes(sink, spec, "mesh" not in gateways)
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"))
