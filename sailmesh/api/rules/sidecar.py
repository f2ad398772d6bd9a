"""Istio's ValidateSidecar (validation.go): ingress and egress listeners, outbound traffic policy, connection pools."""

from __future__ import annotations

from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.destinationrule import check_connection_pool
from sailmesh.api.rules.httproute import check_destination
from sailmesh.api.rules.networking import (
    UNIX,
    alpha_selector_errors,
    namespace_slash_host_errors,
    server_tls_issues,
)
from sailmesh.api.rules.values import (
    HTTP_PROTOCOLS,
    TLS_PROTOCOLS,
    dict_of,
    fqdn_error,
    ip_error,
    list_of,
    port_error,
    port_name_error,
    protocol,
    protocol_error,
    unix_address_error,
)

DEFAULT_ENDPOINT_HOSTS = ("", "127.0.0.1", "0.0.0.0", "::1", "::")


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _port_errors(port: dict[str, Any], bind: str, egress: bool, capture: str) -> list[tuple[str, str]]:
    """validateSidecarIngressPortAndBind / validateSidecarEgressPortBindAndCaptureMode: (field, error) pairs."""
    out: list[tuple[str, str]] = []
    name = port.get("name", "")
    if name:
        err = port_name_error(name)
        if err:
            out.append(("port.name", err))
    err = protocol_error(port.get("protocol", ""))
    if err:
        out.append(("port.protocol", err))
    number = _int(port.get("number"))
    if egress and number == 0:
        if not bind.startswith(UNIX):
            out.append(("bind", "sidecar: ports with 0 value must have a unix domain socket bind address"))
        else:
            err = unix_address_error(bind[len(UNIX):])
            if err:
                out.append(("bind", err))
        if capture not in ("DEFAULT", "NONE"):
            out.append(("captureMode", "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners"))
        return out
    err = port_error(number)
    if err:
        out.append(("port.number", err))
    if bind:
        err = ip_error(bind)
        if err:
            out.append(("bind", err))
    return out


def _default_endpoint_errors(endpoint: str) -> list[str]:
    """The defaultEndpoint part of ValidateSidecar: unix://path, or [host]:port with a loopback/any host."""
    if endpoint.startswith(UNIX):
        err = unix_address_error(endpoint[len(UNIX):])
        return [err] if err else []
    out = []
    host, sep, port = endpoint.rpartition(":")
    if not sep or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        out.append(f"address {endpoint}: missing port in address" if not sep else f"address {endpoint}: too many "
                   "colons in address")
    host = host.removeprefix("[").removesuffix("]")
    if host not in DEFAULT_ENDPOINT_HOSTS:
        out.append("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,"
                   "unix://filepath or unset")
    if not port.isdigit():
        out.append(f"sidecar: defaultEndpoint port ({port}) is not a number")
    else:
        err = port_error(int(port))
        if err:
            out.append(err)
    return out


def _check_ingress(sink: IssueSink, spec: dict[str, Any]) -> None:
    ports: set[int] = set()
    for i, ing in enumerate(list_of(spec.get("ingress"))):
        p = f"spec.ingress[{i}]"
        if ing is None:
            sink.add(p, "sidecar: ingress may not be null")
            continue
        d = dict_of(ing)
        if d.get("port") is None:
            sink.add(f"{p}.port", "sidecar: port is required for ingress listeners")
            continue
        port = dict_of(d["port"])
        if _int(port.get("targetPort")) > 0:
            sink.add(f"{p}.port.targetPort", "targetPort has no impact on Sidecars")
        bind = d.get("bind", "") if isinstance(d.get("bind"), str) else ""
        for field, err in _port_errors(port, bind, egress=False, capture="DEFAULT"):
            sink.add(f"{p}.{field}", err)
        number = _int(port.get("number"))
        if number in ports:
            sink.add(f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique")
        ports.add(number)
        endpoint = d.get("defaultEndpoint", "")
        if isinstance(endpoint, str) and endpoint:
            for err in _default_endpoint_errors(endpoint):
                sink.add(f"{p}.defaultEndpoint", err)
        if d.get("tls") is not None:
            _check_ingress_tls(sink, f"{p}.tls", dict_of(d["tls"]), port)
        check_connection_pool(sink, f"{p}.connectionPool", d.get("connectionPool"))
        pool = dict_of(d.get("connectionPool"))
        if pool.get("http") is not None and protocol(port.get("protocol")) not in HTTP_PROTOCOLS:
            sink.warn(f"{p}.connectionPool.http",
                      f"sidecar: HTTP connection pool settings are configured for port {number} "
                      f'("{port.get("name", "")}") but its protocol is not HTTP ({port.get("protocol", "")}); '
                      "only TCP settings will apply")


def _check_ingress_tls(sink: IssueSink, path: str, tls: dict[str, Any], port: dict[str, Any]) -> None:
    for field, msg in (("subjectAltNames", "sidecar: subjectAltNames is not supported in ingress tls"),
                       ("httpsRedirect", "sidecar: httpsRedirect is not supported"),
                       ("credentialName", "sidecar: credentialName is not currently supported"),
                       ("credentialNames", "sidecar: credentialNames is not currently supported"),
                       ("tlsCertificates", "sidecar: tls_certificates is not currently supported")):
        if tls.get(field):
            sink.add(f"{path}.{field}", msg)
    mode = tls.get("mode", "PASSTHROUGH")
    if mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
        sink.add(f"{path}.mode", f"configuration is invalid: cannot set mode to {mode} in sidecar ingress tls")
    if protocol(port.get("protocol")) not in TLS_PROTOCOLS:
        sink.add(path, "server cannot have TLS settings for non HTTPS/TLS ports")
    server_tls_issues(sink, path, tls)


def _check_egress_hosts(sink: IssueSink, p: str, hosts: list[Any], namespace: str) -> None:
    """The egress host list: `namespace/dnsName` entries; duplicates and `*/*` with others are warnings."""
    seen: dict[str, set[str]] = {}
    for j, h in enumerate(hosts):
        hp = f"{p}.hosts[{j}]"
        if isinstance(h, str):
            ns, sep, svc = h.partition("/")
            if sep and not ns.startswith("~"):
                ns = namespace if ns == "." else ns
                known = seen.setdefault(ns, set())
                if (svc != "*" and (svc in known or "*" in known)) or (svc == "*" and known):
                    sink.warn(hp, f"duplicated egress host: {h}")
                known.add(svc)
        for err in namespace_slash_host_errors(h, gateway=False):
            if err:
                sink.add(hp, err)
    if "*" in seen.get("*", set()) and len(seen) != 1:
        sink.warn(f"{p}.hosts", "`*/*` host select all resources, no other hosts can be added")


def _check_egress(sink: IssueSink, spec: dict[str, Any]) -> None:
    ports: set[int] = set()
    sockets: set[str] = set()
    catch_all = False
    egress = list_of(spec.get("egress"))
    for i, eg in enumerate(egress):
        p = f"spec.egress[{i}]"
        if eg is None:
            sink.add(p, "egress listener may not be null")
            continue
        d = dict_of(eg)
        if d.get("port") is None:
            if catch_all:
                sink.add(p, "sidecar: egress can have only one listener with empty port")
                continue
            if i == len(egress) - 1:
                catch_all = True
            else:
                sink.add(p, "sidecar: the egress listener with empty port should be the last listener in the list")
        else:
            port = dict_of(d["port"])
            if _int(port.get("targetPort")) > 0:
                sink.add(f"{p}.port.targetPort", "targetPort has no impact on Sidecars")
            bind = d.get("bind", "") if isinstance(d.get("bind"), str) else ""
            for field, err in _port_errors(port, bind, egress=True, capture=str(d.get("captureMode", "DEFAULT"))):
                sink.add(f"{p}.{field}", err)
            number = _int(port.get("number"))
            if number == 0:
                if bind in sockets:
                    sink.add(f"{p}.bind", "sidecar: unix domain socket values for listeners must be unique")
                sockets.add(bind)
            else:
                if number in ports:
                    sink.add(f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique")
                ports.add(number)
        hosts = list_of(d.get("hosts"))
        if not hosts:
            sink.add(f"{p}.hosts", "sidecar: egress listener must contain at least one host")
        else:
            _check_egress_hosts(sink, p, hosts, sink.resource.namespace)


def _check_outbound_policy(sink: IssueSink, path: str, policy: Any) -> None:
    """validateSidecarOutboundTrafficPolicy."""
    if policy is None:
        return
    tp = dict_of(policy)
    mode = tp.get("mode", "REGISTRY_ONLY")
    if mode == "ALLOW_ANY_DYNAMIC_DNS":
        sink.add(f"{path}.mode", "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in Sidecar "
                                 "resource")
        return
    if tp.get("egressProxy") is not None:
        proxy = dict_of(tp["egressProxy"])
        if mode != "ALLOW_ANY":
            sink.add(f"{path}.egressProxy", "sidecar: egress_proxy must be set only with ALLOW_ANY "
                                            "outbound_traffic_policy mode")
            return
        err = fqdn_error(proxy.get("host", ""))
        if err:
            sink.add(f"{path}.egressProxy.host", err)
        if proxy.get("port") is None:
            sink.add(f"{path}.egressProxy.port", "sidecar: egress_proxy port must be non-nil")
            return
        check_destination(sink, f"{path}.egressProxy", proxy)


def check_sidecar(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateSidecar."""
    if not alpha_selector_errors(sink, "spec.workloadSelector", spec.get("workloadSelector"), "sidecar"):
        return
    if not list_of(spec.get("egress")) and not list_of(spec.get("ingress")) and \
            spec.get("outboundTrafficPolicy") is None and spec.get("inboundConnectionPool") is None:
        sink.add("spec", "sidecar: empty configuration provided")
        return
    _check_ingress(sink, spec)
    check_connection_pool(sink, "spec.inboundConnectionPool", spec.get("inboundConnectionPool"))
    _check_egress(sink, spec)
    _check_outbound_policy(sink, "spec.outboundTrafficPolicy", spec.get("outboundTrafficPolicy"))
