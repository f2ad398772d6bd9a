"""Istio's ValidateDestinationRule and the traffic-policy validators it calls (validation.go, agent/validation.go)."""

from __future__ import annotations

import math
from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_export_to
from sailmesh.api.rules.values import (
    check_duration_field,
    check_labels,
    dict_of,
    duration_ns,
    fqdn_error,
    int_percent_error,
    ip_error,
    is_label,
    list_of,
    port_error,
    wildcard_domain_error,
    workload_selector_issues,
)

TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")
POLICY_FIELDS = ("outlierDetection", "connectionPool", "loadBalancer", "tls", "portLevelSettings", "tunnel",
                 "proxyProtocol", "retryBudget")
PORT_POLICY_FIELDS = ("outlierDetection", "connectionPool", "loadBalancer", "tls")


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _wrapped(v: Any) -> Any:
    """A google.protobuf wrapper value written plainly (`3`) or, rarely, as `{value: 3}`."""
    return dict_of(v).get("value") if isinstance(v, dict) else v


def check_outlier_detection(sink: IssueSink, path: str, od: Any) -> None:
    """validateOutlierDetection (consecutiveErrors' deprecation warning comes from validate.DEPRECATED_FIELDS)."""
    if od is None:
        return
    o = dict_of(od)
    if o.get("baseEjectionTime") is not None:
        check_duration_field(sink, f"{path}.baseEjectionTime", o["baseEjectionTime"])
    local = _wrapped(o.get("consecutiveLocalOriginFailures"))
    if not o.get("splitExternalLocalOriginErrors") and isinstance(local, int) and local > 0:
        sink.add(f"{path}.consecutiveLocalOriginFailures",
                 "outlier detection consecutive local origin failures is specified, but split external local origin "
                 "errors is set to false")
    if o.get("interval") is not None:
        check_duration_field(sink, f"{path}.interval", o["interval"])
    for f in ("maxEjectionPercent", "minHealthPercent"):
        err = int_percent_error(o.get(f))
        if err:
            sink.add(f"{path}.{f}", err)


def check_connection_pool(sink: IssueSink, path: str, cp: Any) -> None:
    """validateConnectionPool."""
    if cp is None:
        return
    c = dict_of(cp)
    http, tcp = c.get("http"), c.get("tcp")
    if http is None and tcp is None:
        sink.add(path, "connection pool must have at least one field")
        return
    h = dict_of(http)
    for f, what in (("http1MaxPendingRequests", "http1 max pending requests"),
                    ("http2MaxRequests", "http2 max requests"),
                    ("maxRequestsPerConnection", "max requests per connection"), ("maxRetries", "max retries"),
                    ("maxConcurrentStreams", "max concurrent streams")):
        if _int(h.get(f)) < 0:
            sink.add(f"{path}.http.{f}", f"{what} must be non-negative")
    if h.get("idleTimeout") is not None:
        check_duration_field(sink, f"{path}.http.idleTimeout", h["idleTimeout"])
    if h.get("h2UpgradePolicy") == "UPGRADE" and h.get("useClientProtocol"):
        sink.add(f"{path}.http", "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
    if h.get("http2KeepAlive") is not None:
        ka = dict_of(h["http2KeepAlive"])
        for f in ("interval", "timeout"):
            if ka.get(f) is None:
                sink.add(f"{path}.http.http2KeepAlive", f"http2 keepalive {f} is required")
            else:
                check_duration_field(sink, f"{path}.http.http2KeepAlive.{f}", ka[f])
    t = dict_of(tcp)
    if _int(t.get("maxConnections")) < 0:
        sink.add(f"{path}.tcp.maxConnections", "max connections must be non-negative")
    for f in ("connectTimeout", "maxConnectionDuration"):
        if t.get(f) is not None:
            check_duration_field(sink, f"{path}.tcp.{f}", t[f])
    if t.get("idleTimeout") is not None:
        ns = duration_ns(t["idleTimeout"])
        if ns is None or ns // 10**6 != 0:  # 0s (whole milliseconds 0) disables the timeout
            check_duration_field(sink, f"{path}.tcp.idleTimeout", t["idleTimeout"])
    ka = dict_of(t.get("tcpKeepalive"))
    for f in ("time", "interval"):
        if ka.get(f) is not None:
            check_duration_field(sink, f"{path}.tcp.tcpKeepalive.{f}", ka[f])


def is_prime(x: int) -> bool:
    """Envoy's (and Istio's) isPrime for the Maglev table size."""
    if x != 0 and x < 4:
        return True
    if x & 1 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def _check_consistent_hash(sink: IssueSink, path: str, ch: dict[str, Any]) -> None:
    cookie = ch.get("httpCookie")
    if cookie is not None:
        c = dict_of(cookie)
        if not c.get("name"):
            sink.add(f"{path}.httpCookie.name", "name required for HttpCookie")
        seen: set[str] = set()
        for i, attr in enumerate(list_of(c.get("attributes"))):
            name = str(dict_of(attr).get("name", ""))
            if not name:
                sink.add(f"{path}.httpCookie.attributes[{i}].name", "cookie attribute name cannot be empty")
            elif name in seen:
                sink.add(f"{path}.httpCookie.attributes[{i}].name", f"duplicate cookie attribute name: {name}")
            else:
                seen.add(name)
    if _int(ch.get("minimumRingSize")):
        sink.warn(f"{path}.minimumRingSize", "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's "
                                             "RingHash configuration instead")
        if ch.get("maglev") is not None or ch.get("ringHash") is not None:
            sink.add(path, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
    if ch.get("maglev") is not None:
        size = _int(dict_of(ch["maglev"]).get("tableSize"))
        p = f"{path}.maglev.tableSize"
        if size == 0:
            sink.add(p, "tableSize must be set for maglev")
        if size >= 5000011:
            sink.add(p, "tableSize must be less than 5000011 for maglev")
        if not is_prime(size):
            sink.add(p, "tableSize must be a prime number for maglev")


def _locality_param(locality: str) -> tuple[list[str], bool]:
    items = locality.split("/", 2)
    return items, all(items)


def localities_error(localities: list[str]) -> str | None:
    """agent.validateLocalities: at most one trailing `*`, no empty parts, no locality covering another."""
    seen: dict[str, dict[str, dict[str, bool]]] = {}
    for loc in localities:
        n = loc.count("*")
        if n and (n > 1 or not loc.endswith("*")):
            return f"locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in seen:
            return f"locality {loc} overlap with previous specified ones"
        items, ok = _locality_param(loc)
        if not ok:
            return f"locality {loc} must not contain empty region/zone/subzone info"
        overlap = f"locality {loc} overlap with previous specified ones"
        region = items[0]
        if len(items) == 1:
            if region in seen:
                return overlap
            seen[region] = {"*": {"*": True}}
        elif len(items) == 2:
            zone = items[1]
            if region in seen:
                if "*" in seen[region] or zone in seen[region]:
                    return overlap
                seen[region][zone] = {"*": True}
            else:
                seen[region] = {zone: {"*": True}}
        else:
            zone, sub = items[1], items[2]
            if region in seen:
                if "*" in seen[region]:
                    return overlap
                if zone in seen[region]:
                    if seen[region][zone].get("*") or seen[region][zone].get(sub):
                        return overlap
                    seen[region][zone][sub] = True
                else:
                    seen[region][zone] = {sub: True}
            else:
                seen[region] = {zone: {sub: True}}
    return None


def check_locality_lb(sink: IssueSink, path: str, lb: Any, outlier: Any) -> None:
    """agent.ValidateLocalityLbSetting (it returns at the first distribute problem, as Istio's does)."""
    if lb is None:
        return
    s = dict_of(lb)
    distribute, failover = list_of(s.get("distribute")), list_of(s.get("failover"))
    priority = [p for p in list_of(s.get("failoverPriority")) if isinstance(p, str)]
    if distribute and failover:
        sink.add(path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    if failover and priority:
        for label in priority:
            if label in TOPOLOGY_LABELS:
                sink.add(f"{path}.failoverPriority",
                         f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'")
                return
    sources: list[str] = []
    for i, d in enumerate(distribute):
        dd = dict_of(d)
        sources.append(str(dd.get("from", "")))
        total = 0
        to = dict_of(dd.get("to"))
        for w in to.values():
            w = _int(w)
            if w <= 0 or w > 100:
                sink.add(f"{path}.distribute[{i}].to", "locality weight must be in range [1, 100]")
                return
            total += w
        if total != 100:
            sink.add(f"{path}.distribute[{i}].to", f"total locality weight {total} != 100")
            return
        err = localities_error([str(k) for k in to])
        if err:
            sink.add(f"{path}.distribute[{i}].to", err)
    err = localities_error(sources)
    if err:
        sink.add(f"{path}.distribute", err)
    if (failover or priority) and outlier is None:
        sink.warn(path, "outlier detection policy must be provided for failover")
    _check_failover(sink, path, failover, "locality lb failover settings must specify different regions",
                    "locality lb failover only specify region", "locality lb failover region should not contain '*' "
                    "wildcard")


def _check_failover(sink: IssueSink, path: str, failover: list[Any], same: str, slash: str, star: str) -> None:
    for i, f in enumerate(failover):
        fd = dict_of(f)
        src, dst = str(fd.get("from", "")), str(fd.get("to", ""))
        p = f"{path}.failover[{i}]"
        if src == dst:
            sink.add(p, same)
        if "/" in src or "/" in dst:
            sink.add(p, slash)
        if "*" in src or "*" in dst:
            sink.add(p, star)


def check_zone_aware_lb(sink: IssueSink, path: str, lb: Any, outlier: Any) -> None:
    """agent.ValidateZoneAwareLbSetting."""
    if lb is None:
        return
    s = dict_of(lb)
    priority = list_of(s.get("failoverPriority"))
    for label in priority:
        if label in TOPOLOGY_LABELS:
            sink.add(f"{path}.failoverPriority", f"'failover_priority' for zone aware lb must not use topology label "
                                                 f"'{label}'; region- and zone-level routing are handled automatically")
    failover = list_of(s.get("failover"))
    if (failover or priority) and outlier is None:
        sink.warn(path, "outlier detection policy must be provided for failover")
    _check_failover(sink, path, failover, "zone aware lb failover settings must specify different regions",
                    "zone aware lb failover only specifies region; zone and subzone failover are handled automatically",
                    "zone aware lb failover region should not contain '*' wildcard")


def check_load_balancer(sink: IssueSink, path: str, lb: Any, outlier: Any) -> None:
    """validateLoadBalancer."""
    if lb is None:
        return
    s = dict_of(lb)
    if s.get("consistentHash") is not None:
        _check_consistent_hash(sink, f"{path}.consistentHash", dict_of(s["consistentHash"]))
    if s.get("localityLbSetting") is not None and s.get("zoneAwareLbSetting") is not None:
        sink.add(path, "only one of localityLbSetting and zoneAwareLbSetting can be set")
    check_locality_lb(sink, f"{path}.localityLbSetting", s.get("localityLbSetting"), outlier)
    check_zone_aware_lb(sink, f"{path}.zoneAwareLbSetting", s.get("zoneAwareLbSetting"), outlier)
    if s.get("warmup") is not None:
        w = dict_of(s["warmup"])
        if w.get("duration") is None:
            sink.add(f"{path}.warmup.duration", "duration is required")
        else:
            check_duration_field(sink, f"{path}.warmup.duration", w["duration"])
        mp = _wrapped(w.get("minimumPercent"))
        if isinstance(mp, int | float) and mp > 100:
            sink.add(f"{path}.warmup.minimumPercent", "minimumPercent value should be less than or equal to 100")
        ag = _wrapped(w.get("aggression"))
        if "aggression" in w and isinstance(ag, int | float) and ag <= 0:
            sink.add(f"{path}.warmup.aggression", "aggression should be greater than 0")


def check_client_tls(sink: IssueSink, path: str, tls: Any) -> None:
    """agent.ValidateTLS (ClientTLSSettings)."""
    if tls is None:
        return
    t = dict_of(tls)
    mode, cred = t.get("mode", "DISABLE"), t.get("credentialName", "")
    if isinstance(cred, str) and cred.startswith("configmap://"):
        ns, sep, _ = cred[len("configmap://"):].rpartition("/")
        own = sink.resource.namespace
        if sep and ns and ns != own:
            sink.add(f"{path}.credentialName", "invalid configmap:// credentialName: namespace must match the "
                                               f'configuration namespace "{own}"')
    if _wrapped(t.get("insecureSkipVerify")) is True:
        if mode == "SIMPLE" and (t.get("caCertificates") or cred or t.get("subjectAltNames")):
            sink.add(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify "
                           "is set true")
        if mode == "MUTUAL" and (t.get("caCertificates") or t.get("subjectAltNames")):
            sink.add(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and cred:
        if any(t.get(f) for f in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            sink.add(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set")
        return
    if mode == "MUTUAL":
        if not t.get("clientCertificate"):
            sink.add(f"{path}.clientCertificate", "client certificate required for mutual tls")
        if not t.get("privateKey"):
            sink.add(f"{path}.privateKey", "private key required for mutual tls")


def _check_tunnel(sink: IssueSink, path: str, tunnel: Any) -> None:
    """validateTunnelSettings."""
    if tunnel is None:
        return
    t = dict_of(tunnel)
    if t.get("protocol", "") not in ("", "CONNECT", "POST"):
        sink.add(f"{path}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
    host = t.get("targetHost", "")
    fqdn_err, ip_err = fqdn_error(host), ip_error(host)
    if fqdn_err and ip_err:
        sink.add(f"{path}.targetHost", f"tunnel target host must be valid FQDN or IP address: {fqdn_err}; {ip_err}")
    err = port_error(_int(t.get("targetPort")))
    if err:
        sink.add(f"{path}.targetPort", f"tunnel target port is invalid: {err}")


def check_traffic_policy(sink: IssueSink, path: str, policy: Any) -> None:
    """validateTrafficPolicy (+ validatePortTrafficPolicies)."""
    if policy is None:
        return
    p = dict_of(policy)
    if all(p.get(f) is None for f in POLICY_FIELDS):
        sink.add(path, "traffic policy must have at least one field")
        return
    if p.get("tunnel") is not None and p.get("proxyProtocol") is not None:
        sink.add(path, "tunnel and proxyProtocol must not be set together")
        return
    _check_common(sink, path, p)
    for i, pls in enumerate(list_of(p.get("portLevelSettings"))):
        pp = f"{path}.portLevelSettings[{i}]"
        if pls is None:
            sink.add(pp, "traffic policy may not be null")
            continue
        pd = dict_of(pls)
        if pd.get("port") is None:
            sink.add(f"{pp}.port", "portTrafficPolicy must have valid port")
        if all(pd.get(f) is None for f in PORT_POLICY_FIELDS):
            sink.add(pp, "port traffic policy must have at least one field")
        else:
            _check_common(sink, pp, pd)
    _check_tunnel(sink, f"{path}.tunnel", p.get("tunnel"))


def _check_common(sink: IssueSink, path: str, p: dict[str, Any]) -> None:
    check_outlier_detection(sink, f"{path}.outlierDetection", p.get("outlierDetection"))
    check_connection_pool(sink, f"{path}.connectionPool", p.get("connectionPool"))
    check_load_balancer(sink, f"{path}.loadBalancer", p.get("loadBalancer"), p.get("outlierDetection"))
    check_client_tls(sink, f"{path}.tls", p.get("tls"))


def check_destination_rule(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateDestinationRule."""
    err = wildcard_domain_error(spec.get("host", ""))
    if err:
        sink.add("spec.host", err)
    check_traffic_policy(sink, "spec.trafficPolicy", spec.get("trafficPolicy"))
    names: set[str] = set()
    for i, s in enumerate(list_of(spec.get("subsets"))):
        p = f"spec.subsets[{i}]"
        if s is None:
            sink.add(p, "subset may not be null")
            continue
        sd = dict_of(s)
        name = sd.get("name", "")
        if not isinstance(name, str):
            continue  # the schema reports the type
        if name in names:
            sink.add(f"{p}.name", f"duplicate subset names: {name}")
        names.add(name)
        if name == "":
            sink.add(f"{p}.name", "subset name cannot be empty")
        elif not is_label(name):
            sink.add(f"{p}.name", f"subset name is invalid: {name}")
        check_labels(sink, f"{p}.labels", sd.get("labels"))
        check_traffic_policy(sink, f"{p}.trafficPolicy", sd.get("trafficPolicy"))
    check_export_to(sink, "spec.exportTo", spec.get("exportTo"), dr_selector=spec.get("workloadSelector") is not None)
    workload_selector_issues(sink, "spec.workloadSelector", spec.get("workloadSelector"), "matchLabels")
