"""Istio's ValidateEnvoyFilter (validation/envoyfilter), ValidateTelemetry, ValidateProxyConfig, ValidateWasmPlugin."""

from __future__ import annotations

import re
from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import regex_error
from sailmesh.api.rules.networking import alpha_selector_errors
from sailmesh.api.rules.security import check_policy_selectors
from sailmesh.api.rules.values import dict_of, list_of, workload_selector_issues
from sailmesh.errors import PatchError

LISTENER_CLASS = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER"})
ROUTE_CLASS = frozenset({"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"})
INSERT_OPS = frozenset({"INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST"})
INSERTABLE = frozenset({"NETWORK_FILTER", "HTTP_FILTER", "HTTP_ROUTE", "LISTENER_FILTER"})
ADDABLE = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                     "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "LISTENER_FILTER"})
HCM_NAMES = ("envoy.filters.network.http_connection_manager", "envoy.http_connection_manager")
# xds.DeprecatedFilterNames, deprecated name -> canonical name (validateListenerMatchName warns)
DEPRECATED_FILTER_NAMES = {
    "envoy.buffer": "envoy.filters.http.buffer", "envoy.cors": "envoy.filters.http.cors",
    "envoy.csrf": "envoy.filters.http.csrf", "envoy.http_dynamo_filter": "envoy.filters.http.dynamo",
    "envoy.ext_authz": "envoy.filters.network.ext_authz", "envoy.fault": "envoy.filters.http.fault",
    "envoy.grpc_http1_bridge": "envoy.filters.http.grpc_http1_bridge",
    "envoy.grpc_json_transcoder": "envoy.filters.http.grpc_json_transcoder",
    "envoy.grpc_web": "envoy.filters.http.grpc_web", "envoy.gzip": "envoy.filters.http.gzip",
    "envoy.health_check": "envoy.filters.http.health_check", "envoy.ip_tagging": "envoy.filters.http.ip_tagging",
    "envoy.lua": "envoy.filters.http.lua", "envoy.rate_limit": "envoy.filters.http.ratelimit",
    "envoy.router": "envoy.filters.http.router", "envoy.squash": "envoy.filters.http.squash",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
    "envoy.listener.original_src": "envoy.filters.listener.original_src",
    "envoy.listener.proxy_protocol": "envoy.filters.listener.proxy_protocol",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.client_ssl_auth": "envoy.filters.network.client_ssl_auth",
    "envoy.http_connection_manager": "envoy.filters.network.http_connection_manager",
    "envoy.mongo_proxy": "envoy.filters.network.mongo_proxy", "envoy.ratelimit": "envoy.filters.network.ratelimit",
    "envoy.redis_proxy": "envoy.filters.network.redis_proxy", "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
}


def _check_listener_match(sink: IssueSink, p: str, apply_to: str, listener: dict[str, Any]) -> None:
    """The listener-class branch of validateEnvoyFilter (filter / subFilter names)."""
    chain = listener.get("filterChain")
    flt = dict_of(chain).get("filter") if chain is not None else None
    if flt is None:
        return
    f = dict_of(flt)
    fp = f"{p}.match.listener.filterChain.filter"
    if apply_to in ("LISTENER", "FILTER_CHAIN"):
        sink.warn(fp, f"Envoy filter: filter match has no effect when used with {apply_to}")
    if not f.get("name"):
        sink.add(f"{fp}.name", "Envoy filter: filter match has no name to match on")
        return
    if f.get("subFilter") is not None:
        if apply_to != "HTTP_FILTER":
            sink.add(f"{fp}.subFilter", "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only")
            return
        if f["name"] not in HCM_NAMES:
            sink.add(f"{fp}.subFilter", f"Envoy filter: subfilter match requires filter match with {HCM_NAMES[0]}")
            return
        if not dict_of(f["subFilter"]).get("name"):
            sink.add(f"{fp}.subFilter.name", "Envoy filter: subfilter match has no name to match on")
            return
    for name, where in ((f.get("name"), fp), (dict_of(f.get("subFilter")).get("name"), f"{fp}.subFilter")):
        if isinstance(name, str) and name in DEPRECATED_FILTER_NAMES:
            sink.warn(f"{where}.name", f'using deprecated filter name "{name}"; use '
                                       f'"{DEPRECATED_FILTER_NAMES[name]}" instead')


def _check_patch(sink: IssueSink, p: str, cp: dict[str, Any]) -> None:
    match = cp.get("match")
    md = dict_of(match)
    if md.get("context") == "WAYPOINT":
        return  # Istio does not validate waypoint patches yet
    apply_to, patch = cp.get("applyTo", "INVALID"), cp.get("patch")
    op = dict_of(patch).get("operation", "INVALID")
    if not isinstance(apply_to, str) or not isinstance(op, str):
        return  # the schema reports the type
    if apply_to == "INVALID":
        sink.add(f"{p}.applyTo", "Envoy filter: missing applyTo")
        return
    if patch is None:
        sink.add(f"{p}.patch", "Envoy filter: missing patch")
        return
    pd = dict_of(patch)
    if op == "INVALID":
        sink.add(f"{p}.patch.operation", "Envoy filter: missing patch operation")
        return
    if op != "REMOVE" and pd.get("value") is None:
        sink.add(f"{p}.patch.value", "Envoy filter: missing patch value for non-remove operation")
        return
    version = dict_of(md.get("proxy")).get("proxyVersion", "")
    if isinstance(version, str) and version:
        if len(version) > 1024:
            sink.warn(f"{p}.match.proxy.proxyVersion",
                      "Envoy filter: proxyVersion match exceeds 1024 characters and will be ignored")
        else:
            err = regex_error(version)
            if err:
                sink.add(f"{p}.match.proxy.proxyVersion", f"Envoy filter: invalid regex for proxy version, [{err}]")
                return
    typed = [k for k in ("listener", "routeConfiguration", "cluster") if md.get(k) is not None]
    if match is not None and typed:
        if apply_to in LISTENER_CLASS:
            if md.get("listener") is None:
                sink.add(f"{p}.match", "Envoy filter: applyTo for listener class objects cannot have non listener "
                                       "match")
                return
            _check_listener_match(sink, p, apply_to, dict_of(md["listener"]))
        elif apply_to in ROUTE_CLASS and md.get("routeConfiguration") is None:
            sink.add(f"{p}.match", "Envoy filter: applyTo for http route class objects cannot have non route "
                                   "configuration match")
        elif apply_to == "CLUSTER" and md.get("cluster") is None:
            sink.add(f"{p}.match", "Envoy filter: applyTo for cluster class objects cannot have non cluster match")
    value = pd.get("value")
    if op != "REMOVE" and isinstance(value, dict):
        _check_value(sink, p, apply_to, value)
    # sailmesh's own warnings: Istio's validator accepts these, and Istio's patcher then ignores the patch
    if op in INSERT_OPS and apply_to not in INSERTABLE:
        sink.warn(f"{p}.patch.operation", f"Envoy filter: {op} is ignored for {apply_to} (accepted, not applied)")
    if op == "ADD" and apply_to not in ADDABLE:
        sink.warn(f"{p}.patch.operation", f"Envoy filter: ADD is ignored for {apply_to} (accepted, not applied)")


def check_envoy_filter(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateEnvoyFilter."""
    sink.warn("spec", "EnvoyFilter exposes internal implementation details that may change at any time. Prefer "
                      "other APIs if possible, and exercise extreme caution, especially around upgrades.")
    if not alpha_selector_errors(sink, "spec.workloadSelector", spec.get("workloadSelector"), "Envoy filter"):
        return
    for i, cp in enumerate(list_of(spec.get("configPatches"))):
        p = f"spec.configPatches[{i}]"
        if not isinstance(cp, dict):
            sink.add(p, "Envoy filter: null config patch")
            continue
        _check_patch(sink, p, cp)


def cel_syntax_error(expr: str) -> str | None:
    """A partial stand-in for cel-go's Parse (no CEL module is installed): non-empty, balanced brackets/quotes."""
    if not expr.strip():
        return "must be a valid CEL expression, Syntax error: mismatched input '<EOF>'"
    stack: list[str] = []
    quote = ""
    pairs = {")": "(", "]": "[", "}": "{"}
    escaped = False
    for ch in expr:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return f"must be a valid CEL expression, Syntax error: unexpected {ch!r}"
    if quote or stack:
        return "must be a valid CEL expression, Syntax error: unterminated expression"
    return None


def check_telemetry(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateTelemetry (selectors, metrics overrides, tracing, access logging)."""
    check_policy_selectors(sink, spec)
    for section in ("metrics", "tracing", "accessLogging"):
        for i, item in enumerate(list_of(spec.get(section))):
            for j, prov in enumerate(list_of(dict_of(item).get("providers"))):
                if not dict_of(prov).get("name"):
                    sink.add(f"spec.{section}[{i}].providers[{j}].name", "providers.name may not be empty")
                    break
    for i, m in enumerate(list_of(spec.get("metrics"))):
        for j, o in enumerate(list_of(dict_of(m).get("overrides"))):
            op = f"spec.metrics[{i}].overrides[{j}]"
            if o is None:
                sink.add(op, "tagOverrides may not be null")
                continue
            od = dict_of(o)
            for tag, to in dict_of(od.get("tagOverrides")).items():
                tp = f"{op}.tagOverrides.{tag}"
                if tag == "":
                    sink.warn(tp, "tagOverrides.name may not be empty")
                if to is None:
                    sink.add(tp, "tagOverrides may not be null")
                    continue
                td = dict_of(to)
                if td.get("operation", "UPSERT") == "UPSERT" and not td.get("value"):
                    sink.add(tp, "tagOverrides.value must be set when operation is UPSERT")
                elif td.get("operation") == "REMOVE" and td.get("value"):
                    sink.add(tp, "tagOverrides.value may only be set when operation is UPSERT")
            match = dict_of(od.get("match"))
            if "customMetric" in match and not match["customMetric"]:
                sink.add(f"{op}.match.customMetric", "customMetric may not be empty")
    _check_tracing(sink, list_of(spec.get("tracing")))
    for i, a in enumerate(list_of(spec.get("accessLogging"))):
        flt = dict_of(a).get("filter")
        expr = dict_of(flt).get("expression", "")
        if flt is not None and isinstance(expr, str):
            err = cel_syntax_error(expr)
            if err:
                sink.add(f"spec.accessLogging[{i}].filter.expression", err)


def _check_tracing(sink: IssueSink, tracing: list[Any]) -> None:
    """validateTelemetryTracing."""
    if len(tracing) > 1:
        sink.warn("spec.tracing", "multiple tracing is not currently supported")
    for i, t in enumerate(tracing):
        p, td = f"spec.tracing[{i}]", dict_of(t)
        if len(list_of(td.get("providers"))) > 1:
            sink.warn(f"{p}.providers", "multiple providers is not currently supported")
        pct = td.get("randomSamplingPercentage")
        pct = dict_of(pct).get("value") if isinstance(pct, dict) else pct
        if isinstance(pct, int | float) and not 0 <= pct <= 100:
            sink.add(f"{p}.randomSamplingPercentage", "randomSamplingPercentage must be in range [0.0, 100.0]")
        for name, tag in dict_of(td.get("customTags")).items():
            tp = f"{p}.customTags.{name}"
            if name == "":
                sink.add(tp, "tag name may not be empty")
            if tag is None:
                sink.add(tp, f"tag '{name}' may not have a nil value")
                continue
            tg = dict_of(tag)
            for kind, field, msg in (("literal", "value", "literal tag value may not be empty"),
                                     ("header", "name", "header tag name may not be empty"),
                                     ("environment", "name", "environment tag name may not be empty")):
                if kind in tg and not dict_of(tg[kind]).get(field):
                    sink.add(f"{tp}.{kind}.{field}", msg)


def check_proxy_config(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateProxyConfig: selector labels, concurrency >= 0."""
    workload_selector_issues(sink, "spec.selector", spec.get("selector"), "matchLabels")
    c = spec.get("concurrency")
    c = dict_of(c).get("value") if isinstance(c, dict) else c
    if isinstance(c, int) and not isinstance(c, bool) and c < 0:
        sink.add("spec.concurrency", "concurrency must be greater than or equal to 0")


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):/")
_SHA256 = re.compile(r"^[a-f0-9]{64}$")


def check_wasm_plugin(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateWasmPlugin: selectors, url scheme, sha256, pull secret and plugin name lengths, VM env, match ports."""
    check_policy_selectors(sink, spec)
    url = spec.get("url", "")
    if not url:
        sink.add("spec.url", "url field needs to be set")
    elif isinstance(url, str):
        # strictParseURL: a URL without a parseable scheme is read as http://URL
        m = _SCHEME.match(url)
        if m and m.group(1) not in ("file", "http", "https", "oci"):
            sink.add("spec.url", f"url contains unsupported scheme: {m.group(1)}")
    sha = spec.get("sha256", "")
    if isinstance(sha, str) and sha:
        if len(sha) != 64:
            sink.add("spec.sha256", "sha256 field must be 64 characters long")
        elif not _SHA256.match(sha):
            sink.add("spec.sha256", "sha256 field must match [a-f0-9]{64} pattern")
    if len(str(spec.get("imagePullSecret", ""))) > 253:
        sink.add("spec.imagePullSecret", "imagePullSecret field must be less than 253 characters long")
    if len(str(spec.get("pluginName", ""))) > 256:
        sink.add("spec.pluginName", "pluginName field must be less than 255 characters long")
    _check_wasm_env(sink, list_of(dict_of(spec.get("vmConfig")).get("env")))
    for i, sel in enumerate(list_of(spec.get("match"))):
        if sel is None:
            sink.add(f"spec.match[{i}]", f"spec.Match[{i}] is nil")
            return
        for j, port in enumerate(list_of(dict_of(sel).get("ports"))):
            n = dict_of(port).get("number", 0)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 65535:
                sink.add(f"spec.match[{i}].ports[{j}].number", f"spec.Match[{i}].Ports[{j}] is out of range: {n}")
                return


def _check_wasm_env(sink: IssueSink, env: list[Any]) -> None:
    """validateWasmPluginVMConfig (it stops at the first problem)."""
    names: set[str] = set()
    for i, e in enumerate(env):
        if e is None:
            continue
        ed, p = dict_of(e), f"spec.vmConfig.env[{i}]"
        name = str(ed.get("name", ""))
        err = ("spec.vmConfig.env invalid" if not name else
               "env.name field must be less than 255 characters long" if len(name) > 256 else
               "duplicate env" if name in names else
               "value may only be set when valueFrom is INLINE"
               if ed.get("valueFrom", "INLINE") != "INLINE" and ed.get("value") else None)
        if err:
            sink.add(p, err)
            return
        names.add(name)


def _check_value(sink: IssueSink, p: str, apply_to: str, value: dict[str, Any]) -> None:
    """A patch value against the Envoy type it patches (Envoy's protos load here, only for a patch value)."""
    from sailmesh.api.envoyfilter_values import VALUE_TYPES, build_value

    if apply_to not in VALUE_TYPES:
        return
    # xds.BuildXDSObjectFromStruct: a value that does not build is an error; one that builds only when unknown
    # fields are ignored is a warning ("our libraries may be outdated")
    try:
        build_value(apply_to, value, strict=False)
    except PatchError as e:
        sink.add(f"{p}.patch.value", f"Envoy filter: {e}")
    else:
        try:
            build_value(apply_to, value, strict=True)
        except PatchError as e:
            sink.warn(f"{p}.patch.value", f"Envoy filter: {e}")
