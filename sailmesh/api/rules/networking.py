"""Istio's ValidateGateway, ValidateServiceEntry, ValidateWorkloadEntry and ValidateWorkloadGroup (validation.go)."""

from __future__ import annotations

from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_export_to
from sailmesh.api.rules.values import (
    HTTP_PROTOCOLS,
    PROBE_HEADER_NAME_RE,
    TCP_PROTOCOLS,
    TLS_PROTOCOLS,
    check_labels,
    dict_of,
    fqdn_error,
    ip_error,
    ip_subnet_error,
    is_ip,
    is_label,
    label_errors,
    list_of,
    partial_wildcard_error,
    port_error,
    port_name_error,
    protocol,
    protocol_error,
    unix_address_error,
    wildcard_domain_error,
)
from sailmesh.api.tlsnames import ECDH_CURVES, valid_cipher_suite

UNIX = "unix://"


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _add_all(sink: IssueSink, path: str, errors: list[str | None]) -> None:
    for err in errors:
        if err:
            sink.add(path, err)


def hostname_part_errors(hostname: str, gateway: bool) -> list[str | None]:
    """agent.validateSidecarOrGatewayHostnamePart: an FQDN or `*` (gateways also take IPs), no partial wildcards."""
    out: list[str | None] = []
    if hostname != "*" and "." not in hostname:
        out.append("short names (non FQDN) are not allowed")
    err = wildcard_domain_error(hostname)
    if err:
        if not gateway:
            out.append(err)
        if not is_ip(hostname):
            out.append(err)
    out.append(partial_wildcard_error(hostname))
    return out


def namespace_slash_host_errors(hostname: Any, gateway: bool) -> list[str | None]:
    """agent.ValidateNamespaceSlashWildcardHostname: `namespace/dnsName` (a gateway also takes a bare host)."""
    if not isinstance(hostname, str):
        return []
    ns, sep, name = hostname.partition("/")
    if not sep:
        return hostname_part_errors(hostname, True) if gateway else ["host must be of form namespace/dnsName"]
    out: list[str | None] = []
    if not ns or not name:
        out.append("config namespace and dnsName in host entry cannot be empty")
    if not gateway:
        bare = ns.removeprefix("~")
        if bare not in ("", "*", ".") and not is_label(bare):
            out.append(f'invalid namespace value "{ns}" in sidecar')
    elif ns not in ("*", ".") and not is_label(ns):
        out.append(f'invalid namespace value "{ns}" in gateway')
    return out + hostname_part_errors(name, gateway)


def server_tls_issues(sink: IssueSink, path: str, tls: Any) -> None:
    """validateTLSOptions (ServerTLSSettings; an unset mode is PASSTHROUGH, the enum's zero value)."""
    if tls is None:
        return
    t = dict_of(tls)
    mode = t.get("mode", "PASSTHROUGH")
    ciphers = [c for c in list_of(t.get("cipherSuites")) if isinstance(c, str)]
    if t.get("minProtocolVersion") in ("TLSV1_0", "TLSV1_1") and not ciphers:
        sink.warn(path, "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer "
                        "include compatible ciphers.")
    invalid = sorted({c for c in ciphers if not valid_cipher_suite(c)})
    valid = [c for c in ciphers if c not in invalid]
    dups = sorted({c for c in valid if valid.count(c) > 1})
    if invalid:
        sink.warn(f"{path}.cipherSuites", f"ignoring invalid cipher suites: [{' '.join(invalid)}]")
    if dups:
        sink.warn(f"{path}.cipherSuites", f"ignoring duplicate cipher suites: [{' '.join(dups)}]")
    curves = sorted({c for c in list_of(t.get("ecdhCurves")) if not isinstance(c, str) or c not in ECDH_CURVES},
                    key=str)
    if curves:  # Istio passes them to Envoy, which rejects the whole listener: refused here instead
        sink.add(f"{path}.ecdhCurves", f"unknown ECDH curve(s) {', '.join(map(str, curves))} "
                                       f"(known: {', '.join(sorted(ECDH_CURVES))})")
    if mode == "ISTIO_MUTUAL":
        for f, what in (("serverCertificate", "server certificate"), ("privateKey", "private key"),
                        ("caCertificates", "CA bundle"), ("tlsCertificates", "tlsCertificates"),
                        ("credentialName", "credentialName"), ("credentialNames", "credentialNames")):
            if t.get(f):
                sink.add(f"{path}.{f}", f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    certs = ("caCrl", "serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
             "credentialNames")
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and any(t.get(f) for f in certs):
        sink.warn(path, f"{mode} mode does not use certificates, they will be ignored")
    sources = sum((bool(t.get("serverCertificate") and t.get("privateKey")), bool(t.get("credentialName")),
                   bool(t.get("credentialNames")), bool(t.get("tlsCertificates"))))
    if sources > 1:
        sink.add(path, "only one of credential_name, credential_names, server_certificate/private_key, "
                       "tls_certificates should be specified")
    terminating = mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
    if terminating and (t.get("credentialName") or t.get("credentialNames")):
        return
    if terminating:
        prefix = "SIMPLE TLS" if mode == "SIMPLE" else "MUTUAL TLS"
        if mode != "SIMPLE" and not t.get("caCertificates"):
            sink.add(f"{path}.caCertificates", f"{prefix} requires a client CA bundle")
        pairs = [dict_of(c) for c in list_of(t.get("tlsCertificates"))] or [t]
        if len(list_of(t.get("tlsCertificates"))) > 2:
            sink.warn(f"{path}.tlsCertificates", f"{prefix} can support up to 2 server certificates")
        for c in pairs:
            if not c.get("serverCertificate"):
                sink.add(f"{path}.serverCertificate", f"{prefix} requires a server certificate")
            if not c.get("privateKey"):
                sink.add(f"{path}.privateKey", f"{prefix} requires a private key")
    if t.get("caCrl"):
        if t.get("credentialName"):
            sink.add(f"{path}.caCrl", "CRL is not supported with credentialName. CRL has to be specified in the "
                                      "credential")
        if mode == "SIMPLE":
            sink.add(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS")


def _check_server(sink: IssueSink, path: str, server: dict[str, Any]) -> None:
    """validateServer (+ validateServerPort, validateServerBind)."""
    hosts = list_of(server.get("hosts"))
    if not hosts:
        sink.add(f"{path}.hosts", "server config must contain at least one host")
    for i, h in enumerate(hosts):
        _add_all(sink, f"{path}.hosts[{i}]", namespace_slash_host_errors(h, gateway=True))
    port, bind = server.get("port"), server.get("bind", "")
    bind = bind if isinstance(bind, str) else ""
    port_ok = True
    if port is None:
        sink.add(f"{path}.port", "port is required")
        port_ok = False
    else:
        pd = dict_of(port)
        before = len(sink.issues)
        if protocol(pd.get("protocol")) == "Unsupported":
            sink.add(f"{path}.port.protocol", f'invalid protocol "{pd.get("protocol", "")}", supported protocols are '
                                              "HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP")
        if _int(pd.get("number")) > 0 or not bind.startswith(UNIX):
            _add_all(sink, f"{path}.port.number", [port_error(_int(pd.get("number")))])
        if _int(pd.get("targetPort")) > 0:
            sink.add(f"{path}.port.targetPort", "targetPort has no impact on Gateways")
        if not pd.get("name"):
            sink.add(f"{path}.port.name", "port name must be set")
        port_ok = not any(i.severity == "error" for i in sink.issues[before:])
    if bind.startswith(UNIX):
        _add_all(sink, f"{path}.bind", [unix_address_error(bind[len(UNIX):])])
        if port is not None and _int(dict_of(port).get("number")) != 0:
            sink.add(f"{path}.port.number", "port number must be 0 for unix domain socket")
    elif bind:
        _add_all(sink, f"{path}.bind", [ip_error(bind)])
    tls = server.get("tls")
    server_tls_issues(sink, f"{path}.tls", tls)
    if port_ok:
        proto = protocol(dict_of(port).get("protocol"))
        t = dict_of(tls)
        if proto in TLS_PROTOCOLS and tls is None:
            sink.add(f"{path}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        elif proto not in TLS_PROTOCOLS and tls is not None:
            if proto in HTTP_PROTOCOLS:
                passthrough = t.get("mode", "PASSTHROUGH") in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if not passthrough or any(t.get(f) for f in ("caCertificates", "privateKey", "serverCertificate")):
                    sink.add(f"{path}.tls", "server cannot have TLS settings for plain text HTTP ports")
            else:
                sink.add(f"{path}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")


def check_gateway(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateGateway."""
    name = sink.resource.name
    if not is_label(name):
        sink.add("metadata.name", f'invalid gateway name: "{name}"')
    servers = list_of(spec.get("servers"))
    if not servers:
        sink.add("spec.servers", "gateway must have at least one server")
    names: set[str] = set()
    for i, s in enumerate(servers):
        p = f"spec.servers[{i}]"
        if s is None:
            sink.add(p, "cannot have nil server")
            continue
        sd = dict_of(s)
        _check_server(sink, p, sd)
        if sd.get("port") is not None:
            port = dict_of(sd["port"])
            pname = str(port.get("name", ""))
            if pname in names:
                sink.add(f"{p}.port.name", f"port names in servers must be unique: duplicate name {pname}")
            names.add(pname)
            if protocol(port.get("protocol")) not in HTTP_PROTOCOLS and dict_of(sd.get("tls")).get("httpsRedirect"):
                sink.warn(f"{p}.tls.httpsRedirect", "tls.httpsRedirect should only be used with http servers")


def alpha_selector_errors(sink: IssueSink, path: str, selector: Any, what: str) -> bool:
    """ValidateAlphaWorkloadSelector: False (and the errors) for empty/wildcard keys; no labels is a warning."""
    if not isinstance(selector, dict):
        return True
    labels = dict_of(selector.get("labels"))
    ok = True
    for k, v in labels.items():
        if k == "":
            sink.add(f"{path}.labels", f'empty key is not supported in selector: "={v}"')
            ok = False
        if "*" in str(k) or (isinstance(v, str) and "*" in v):
            sink.add(f"{path}.labels.{k}", f'wildcard is not supported in selector: "{k}={v}"')
            ok = False
    if ok and not labels:
        sink.warn(path, f"{what}: workload selector specified without labels, will be applied to all services in "
                        "namespace")
    return ok


def workload_entry_issues(sink: IssueSink, path: str, we: dict[str, Any], service_ports: set[str] | None,
                          allow_fqdn: bool) -> None:
    """validateWorkloadEntry (a WorkloadEntry, or a STATIC ServiceEntry endpoint with its service's port names)."""
    addr = we.get("address", "")
    addr = addr if isinstance(addr, str) else ""
    if addr == "":
        if not we.get("network"):
            sink.add(f"{path}.address", "address is required")
            return
        sink.warn(f"{path}.address", f'address is unset with network "{we["network"]}"')
    unix = addr.startswith(UNIX)
    ports = dict_of(we.get("ports"))
    if unix:
        _add_all(sink, f"{path}.address", [unix_address_error(addr[len(UNIX):])])
        if ports:
            sink.add(f"{path}.ports", f"unix endpoint {addr} must not include ports")
    elif addr and not is_ip(addr):
        if not allow_fqdn:
            sink.add(f"{path}.address", f'endpoint address "{addr}" is not a valid IP address')
        elif fqdn_error(addr):
            sink.add(f"{path}.address", f'endpoint address "{addr}" is not a valid FQDN or an IP address')
    for name, port in ports.items():
        if service_ports is not None and name not in service_ports:
            sink.add(f"{path}.ports.{name}", f"endpoint port {port} is not defined by the service entry")
        _add_all(sink, f"{path}.ports.{name}", [port_name_error(name), port_error(port)])
    check_labels(sink, f"{path}.labels", we.get("labels"))
    if unix and service_ports is not None and len(service_ports) != 1:
        sink.add(path, "exactly 1 service port required for unix endpoints")


def check_workload_entry(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateWorkloadEntry (FQDN addresses allowed; ports are not checked against a ServiceEntry)."""
    workload_entry_issues(sink, "spec", spec, None, allow_fqdn=True)


def check_workload_group(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateWorkloadGroup: a template is required (not validated as an entry), metadata labels, readiness probe."""
    if spec.get("template") is None:
        sink.add("spec.template", "template is required")
        return
    errs = label_errors(dict_of(spec.get("metadata")).get("labels"))
    if errs:
        sink.add("spec.metadata.labels", f"invalid labels: {'; '.join(errs)}")
        return
    if spec.get("probe") is not None:
        _check_probe(sink, "spec.probe", dict_of(spec["probe"]))


def _check_probe(sink: IssueSink, path: str, probe: dict[str, Any]) -> None:
    """validateReadinessProbe."""
    for f in ("periodSeconds", "initialDelaySeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        if _int(probe.get(f)) < 0:
            sink.add(f"{path}.{f}", f"{f} must be non-negative")
    if "httpGet" in probe:
        h = dict_of(probe["httpGet"])
        _add_all(sink, f"{path}.httpGet.port", [port_error(_int(h.get("port")))])
        if h.get("scheme", "") not in ("", "HTTP", "HTTPS"):
            sink.add(f"{path}.httpGet.scheme", 'httpGet.scheme must be one of "HTTPS", "HTTP"')
        for i, header in enumerate(list_of(h.get("httpHeaders"))):
            name = dict_of(header).get("name", "")
            if not name:
                sink.add(f"{path}.httpGet.httpHeaders[{i}].name", "header name cannot be empty")
            elif not (isinstance(name, str) and PROBE_HEADER_NAME_RE.match(name)):
                sink.add(f"{path}.httpGet.httpHeaders[{i}].name", f"header name {name} is not a valid header name")
    elif "tcpSocket" in probe:
        _add_all(sink, f"{path}.tcpSocket.port", [port_error(_int(dict_of(probe["tcpSocket"]).get("port")))])
    elif "exec" in probe:
        if not list_of(dict_of(probe["exec"]).get("command")):
            sink.add(f"{path}.exec.command", "exec.command is required")
    else:
        sink.add(path, "unknown health check method <nil>")


def check_service_entry(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateServiceEntry."""
    if not alpha_selector_errors(sink, "spec.workloadSelector", spec.get("workloadSelector"), "service entry"):
        return
    resolution = spec.get("resolution", "NONE")
    selector, endpoints = spec.get("workloadSelector"), spec.get("endpoints")
    if selector is not None and endpoints is not None:
        sink.add("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    hosts = [h for h in list_of(spec.get("hosts")) if isinstance(h, str)]
    if not hosts:
        sink.add("spec.hosts", "service entry must have at least one host")
    for i, h in enumerate(hosts):
        if h == "*":
            sink.add(f"spec.hosts[{i}]", f"invalid host {h}")
            continue
        _add_all(sink, f"spec.hosts[{i}]", [wildcard_domain_error(h)])
        if resolution != "DYNAMIC_DNS":
            err = partial_wildcard_error(h)
            if err:
                sink.warn(f"spec.hosts[{i}]", err)
    addresses = list_of(spec.get("addresses"))
    for i, a in enumerate(addresses):
        _add_all(sink, f"spec.addresses[{i}]", [ip_subnet_error(a)])
    if any("/" in str(a) for a in addresses) and resolution not in ("NONE", "STATIC"):
        sink.add("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types")
    labels = sink.resource.labels or {}
    auto = resolution != "NONE" and str(labels.get("networking.istio.io/enable-autoallocate-ip", "")).lower() != \
        "false" and not addresses
    numbers: set[int] = set()
    port_names: set[str] = set()
    ports = list_of(spec.get("ports"))
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if p is None:
            sink.add(pp, "service entry port may not be null")
            continue
        pd = dict_of(p)
        name, number = str(pd.get("name", "")), _int(pd.get("number"))
        if name in port_names:
            sink.add(f"{pp}.name", f'service entry port name "{name}" already defined')
        port_names.add(name)
        if number in numbers:
            sink.add(f"{pp}.number", f"service entry port {number} already defined")
        numbers.add(number)
        if _int(pd.get("targetPort")):
            _add_all(sink, f"{pp}.targetPort", [port_error(pd["targetPort"])])
        if not addresses and not auto and pd.get("protocol", "") in ("", "TCP"):
            sink.warn(pp, "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation "
                          "is not enabled")
        _add_all(sink, f"{pp}.name", [port_name_error(name)])
        _add_all(sink, f"{pp}.protocol", [protocol_error(pd.get("protocol", ""))])
        _add_all(sink, f"{pp}.number", [port_error(number)])
    eps = list_of(endpoints)
    if resolution == "NONE":
        if eps:
            sink.add("spec.endpoints", "no endpoints should be provided for resolution type none")
        if selector is not None:
            sink.warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE")
    elif resolution == "STATIC":
        for i, e in enumerate(eps):
            if e is None:
                sink.add(f"spec.endpoints[{i}]", "endpoint cannot be nil")
                continue
            workload_entry_issues(sink, f"spec.endpoints[{i}]", dict_of(e), port_names, allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        _check_dns_entry(sink, spec, resolution, hosts, eps, port_names, addresses)
    elif resolution == "DYNAMIC_DNS":
        _check_dynamic_dns(sink, spec, hosts, eps, addresses)
    if resolution != "NONE" and len(hosts) > 1:
        for i, p in enumerate(ports):
            proto = protocol(dict_of(p).get("protocol"))
            if proto not in HTTP_PROTOCOLS and proto not in TLS_PROTOCOLS:
                sink.add(f"spec.ports[{i}]", "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"), service_entry=True)


def _check_dns_entry(sink: IssueSink, spec: dict[str, Any], resolution: str, hosts: list[str], eps: list[Any],
                     port_names: set[str], addresses: list[Any]) -> None:
    """The DNS / DNS_ROUND_ROBIN branch of ValidateServiceEntry."""
    if not eps:
        for i, h in enumerate(hosts):
            err = fqdn_error(h)
            if err:
                sink.add(f"spec.hosts[{i}]", "hosts must be FQDN or contain only prefix wildcards if no endpoints are "
                                             f"provided for resolution mode {resolution}, {err}")
                break
    if resolution == "DNS_ROUND_ROBIN" and len(eps) > 1:
        sink.add("spec.endpoints", f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
    for i, e in enumerate(eps):
        p = f"spec.endpoints[{i}]"
        if e is None:
            sink.add(p, "endpoint cannot be nil")
            continue
        ed = dict_of(e)
        addr = ed.get("address", "")
        if not is_ip(addr) and fqdn_error(addr):
            sink.add(f"{p}.address", f'endpoint address "{addr}" is not a valid FQDN or an IP address')
        check_labels(sink, f"{p}.labels", ed.get("labels"))
        for name, port in dict_of(ed.get("ports")).items():
            if name not in port_names:
                sink.add(f"{p}.ports.{name}", f"endpoint port {port} is not defined by the service entry")
            _add_all(sink, f"{p}.ports.{name}", [port_name_error(name), port_error(port)])
    if addresses:
        for p in list_of(spec.get("ports")):
            if protocol(dict_of(p).get("protocol")) in TCP_PROTOCOLS:
                if len(hosts) > 1:
                    sink.warn("spec.hosts", "service entry can not have more than one host specified simultaneously "
                                            "with address and tcp port")
                break


def _check_dynamic_dns(sink: IssueSink, spec: dict[str, Any], hosts: list[str], eps: list[Any],
                       addresses: list[Any]) -> None:
    """The DYNAMIC_DNS branch of ValidateServiceEntry."""
    if not hosts:
        sink.add("spec.hosts", "at least one wildcard host must be provided for resolution type DYNAMIC_DNS")
    for i, h in enumerate(hosts):
        if not h.startswith("*"):
            sink.add(f"spec.hosts[{i}]", "host must be wildcarded for resolution mode DYNAMIC_DNS")
    if addresses:
        sink.add("spec.addresses", "addresses cannot be set for resolution type DYNAMIC_DNS. HTTP route domains will "
                                   "only be generatedfrom the hosts field values")
    if eps:
        sink.add("spec.endpoints", "endpoints cannot be set for resolution type DYNAMIC_DNS. Destination IP address "
                                   "determined from hostsfield values")
    for i, p in enumerate(list_of(spec.get("ports"))):
        if protocol(dict_of(p).get("protocol")) not in ("HTTP", "TLS", "GRPC", "HTTP2"):
            sink.add(f"spec.ports[{i}].protocol", "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for "
                                                  "resolution type DYNAMIC_DNS")
    location = spec.get("location", "MESH_EXTERNAL")
    if location not in ("MESH_EXTERNAL", "MESH_INTERNAL"):
        sink.add("spec.location", "location must be MESH_EXTERNAL or MESH_INTERNAL for resolution type DYNAMIC_DNS")
    use = str((sink.resource.labels or {}).get("istio.io/use-waypoint", ""))
    if location == "MESH_INTERNAL" and use and use.lower() != "none":
        sink.add("spec.location", "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when "
                                  "using waypoints")
