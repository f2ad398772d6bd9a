"""Istio's HTTP route validators (validation.go, agent/validation.go): destinations, faults, CORS, redirects, ..."""

from __future__ import annotations

from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import regex_error
from sailmesh.api.rules.values import (
    check_duration_field,
    cors_header_error,
    dict_of,
    duration_ns,
    is_authority_header,
    is_label,
    list_of,
    percentage_error,
    port_error,
    wildcard_domain_error,
)

# agent.supportedRetryOnPolicies (Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on values)
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
# Go's net/http StatusText: the codes it names (ValidateHTTPRetry accepts these as retryOn entries)
HTTP_STATUS_TEXT = frozenset({
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423,
    424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
})
# supportedCORSMethods: Go's net/http method constants and "*"
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})
# grpc.SupportedGRPCStatus
GRPC_STATUS = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})
KB, MB = 1024, 1024 * 1024
ENVOY_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


def as_int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def string_match_error(sm: Any, where: str, uri: bool = False) -> str | None:
    """validateStringMatch (prefix must not be empty) / validateStringMatchRegexp (the uri allows an empty prefix)."""
    sm = dict_of(sm)
    if "prefix" in sm and not uri and sm["prefix"] == "":
        return f'"{where}": prefix string match should not be empty'
    if "regex" in sm and isinstance(sm["regex"], str):
        return string_regexp_error(sm["regex"], where)
    return None


def string_regexp_error(pattern: str, where: str) -> str | None:
    """validateStringRegexp: non-empty, at most 1024 characters, RE2."""
    if pattern == "":
        return f'"{where}": regex string match should not be empty'
    if len(pattern) > 1024:
        return f'"{where}": regex is too large, max length allowed is 1024'
    err = regex_error(pattern)
    if err:
        return f'"{where}": {err}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)'
    return None


def check_destination(sink: IssueSink, path: str, dest: Any) -> None:
    """validateDestination: host (not `*`, wildcard domains allowed), subset name, port selector."""
    d = dict_of(dest)
    if not d:
        return
    host = d.get("host", "")
    err = f"invalid destination host {host}" if host == "*" else wildcard_domain_error(host)
    if err:
        sink.add(f"{path}.host", err)
    subset = d.get("subset")
    if subset not in (None, ""):
        if not is_label(subset):
            sink.add(f"{path}.subset", f"subset name is invalid: {subset}")
    if "port" in d:
        err = port_error(as_int(dict_of(d["port"]).get("number")))
        if err:
            sink.add(f"{path}.port.number", err)


def _check_cors(sink: IssueSink, path: str, cors: Any) -> None:
    """validateCORSPolicy / validateAllowOrigins / validateCORSHTTPMethod."""
    c = dict_of(cors)
    for i, origin in enumerate(list_of(c.get("allowOrigins"))):
        o = dict_of(origin)
        value = next((o[k] for k in ("exact", "prefix", "regex") if k in o), "")
        p = f"{path}.allowOrigins[{i}]"
        if value == "":
            sink.add(p, f"'{value}' is not a valid match type for CORS allow origins")
        elif "regex" in o and isinstance(value, str):
            err = string_regexp_error(value, "corsPolicy.allowOrigins")
            if err:
                sink.add(p, err)
    for i, m in enumerate(list_of(c.get("allowMethods"))):
        if not (isinstance(m, str) and m in CORS_METHODS):
            sink.add(f"{path}.allowMethods[{i}]", f'"{m}" is not a supported HTTP method')
    for field in ("allowHeaders", "exposeHeaders"):
        for i, h in enumerate(list_of(c.get(field))):
            err = cors_header_error(h)
            if err:
                sink.add(f"{path}.{field}[{i}]", err)
    if "maxAge" in c:
        check_duration_field(sink, f"{path}.maxAge", c["maxAge"])
        ns = duration_ns(c["maxAge"])
        if ns is not None and ns % 10**9:
            sink.add(f"{path}.maxAge", "max_age duration is accurate only to seconds precision")


def _check_fault(sink: IssueSink, path: str, fault: Any) -> None:
    """validateHTTPFaultInjection (+ Abort / Delay)."""
    if fault is None:
        return
    f = dict_of(fault)
    abort, delay = f.get("abort"), f.get("delay")
    if abort is None and delay is None:
        sink.add(path, "HTTP fault injection must have an abort and/or a delay")
    if abort is not None:
        a = dict_of(abort)
        err = percentage_error(a.get("percentage"))
        if err:
            sink.add(f"{path}.abort.percentage", err)
        if "grpcStatus" in a:
            if not (isinstance(a["grpcStatus"], str) and a["grpcStatus"] in GRPC_STATUS):
                sink.add(f"{path}.abort.grpcStatus",
                         f"gRPC status {a['grpcStatus']!r} is not supported. See https://github.com/grpc/grpc/blob/"
                         "master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'")
        elif "http2Error" in a:
            sink.add(f"{path}.abort.http2Error", "HTTP/2 abort fault injection not supported yet")
        elif "httpStatus" in a:
            err = http_status_error(a["httpStatus"])
            if err:
                sink.add(f"{path}.abort.httpStatus", err)
        else:
            sink.warn(f"{path}.abort", "abort configured, but error type not set")
    if delay is not None:
        d = dict_of(delay)
        err = percentage_error(d.get("percentage"))
        if err:
            sink.add(f"{path}.delay.percentage", err)
        if "fixedDelay" in d:
            check_duration_field(sink, f"{path}.delay.fixedDelay", d["fixedDelay"])
        elif "exponentialDelay" in d:
            check_duration_field(sink, f"{path}.delay.exponentialDelay", d["exponentialDelay"])
            sink.add(f"{path}.delay.exponentialDelay", "exponentialDelay not supported yet")
        else:  # sailmesh's own warning: Istio accepts it silently, and Envoy injects no delay
            sink.warn(f"{path}.delay", "delay without fixedDelay injects no delay")


def http_status_error(status: Any) -> str | None:
    """validateHTTPStatus: the code accepts 200..600 although its message says 200-599 (Istio's code is followed)."""
    s = as_int(status)
    if s < 200 or s > 600:
        return f"HTTP status {s} is not in range 200-599"
    return None


def _check_redirect(sink: IssueSink, path: str, redirect: Any, matches: list[Any]) -> None:
    """validateHTTPRedirect (it stops at the first problem, as Istio's does)."""
    if redirect is None:
        return
    rd = dict_of(redirect)
    uri, prefix = rd.get("uri", ""), rd.get("prefixRewrite", "")
    if uri and prefix:
        sink.add(path, "redirect may only specify one of uri or prefix_rewrite")
        return
    if prefix:
        for m in matches:
            u = dict_of(m).get("uri")
            if u is not None and "prefix" not in dict_of(u):
                sink.add(path, "redirect prefix_rewrite requires all URI matches to use prefix match type")
                return
    if not any(rd.get(k) for k in ("uri", "prefixRewrite", "authority", "scheme")) and \
            "port" not in rd and "derivePort" not in rd:
        sink.add(path, "redirect must specify URI, authority, scheme, or port")
        return
    code = as_int(rd.get("redirectCode"))
    if code and not 300 <= code <= 399:
        sink.add(f"{path}.redirectCode", f"{code} is not a valid redirect code, must be 3xx")
        return
    if code and code not in ENVOY_REDIRECT_CODES:  # sailmesh's own warning: valid, but Envoy cannot send it
        sink.warn(f"{path}.redirectCode", f"redirect code {code} is valid but Envoy redirects only with 301, 302, "
                                          "303, 307 or 308 (Istio drops the route's action; sailmesh sends 301)")
    scheme = rd.get("scheme", "")
    if scheme and scheme not in ("http", "https"):
        sink.add(f"{path}.scheme", 'invalid redirect scheme, must be "http" or "https"')
        return
    if as_int(rd.get("port")) > 0:
        err = port_error(rd["port"])
        if err:
            sink.add(f"{path}.port", err)


def _check_direct_response(sink: IssueSink, path: str, direct: Any) -> None:
    """validateHTTPDirectResponse: body over 1MB is an error, over 100kB a warning; status 200..600."""
    if direct is None:
        return
    d = dict_of(direct)
    body = dict_of(d.get("body"))
    text = body.get("string", body.get("bytes", ""))
    size = len(text.encode()) if isinstance(text, str) else 0
    if "bytes" in body and isinstance(text, str):
        size = len(text) * 3 // 4  # base64 in YAML: the decoded size
    if size > MB:
        sink.add(f"{path}.body", "large direct_responses may impact control plane performance, must be less than 1MB")
    elif size > 100 * KB:
        sink.warn(f"{path}.body", "large direct_responses may impact control plane performance")
    err = http_status_error(d.get("status"))
    if err:
        sink.add(f"{path}.status", err)


def _check_mirrors(sink: IssueSink, path: str, r: dict[str, Any]) -> None:
    """mirrorPercent (or mirror_percent) and mirrorPercentage bounds, validateDestination(mirror), mirrors."""
    for key in ("mirrorPercent", "mirror_percent"):  # the CRD's altName spelling too (Istio's protojson reads both)
        if key in r:
            v = r[key]
            v = dict_of(v).get("value", 0) if isinstance(v, dict) else v
            if isinstance(v, int | float) and v > 100:
                sink.add(f"{path}.{key}", f"mirror_percent must have a max value of 100 (it has {v})")
    if "mirrorPercentage" in r:
        v = dict_of(r["mirrorPercentage"]).get("value", 0)
        if isinstance(v, int | float) and v > 100:
            sink.add(f"{path}.mirrorPercentage", f"mirror_percentage must have a max value of 100 (it has {v:f})")
        if isinstance(v, int | float) and v < 0:
            sink.add(f"{path}.mirrorPercentage", f"mirror_percentage must have a min value of 0 (it has {v:f})")
    check_destination(sink, f"{path}.mirror", r.get("mirror"))
    for i, m in enumerate(list_of(r.get("mirrors"))):
        p = f"{path}.mirrors[{i}]"
        md = dict_of(m)
        if m is None:
            sink.add(p, "mirror cannot be null")
            continue
        if md.get("destination") is None:
            sink.add(p, "destination is required for mirrors")
            continue
        check_destination(sink, f"{p}.destination", md["destination"])
        v = dict_of(md.get("percentage")).get("value", 0)
        if isinstance(v, int | float) and v > 100:
            sink.add(f"{p}.percentage", f"mirror percentage must have a max value of 100 (it has {v:f})")
        if isinstance(v, int | float) and v < 0:
            sink.add(f"{p}.percentage", f"mirror percentage must have a min value of 0 (it has {v:f})")


def _check_retries(sink: IssueSink, path: str, retries: Any) -> None:
    """agent.ValidateHTTPRetry: attempts >= 0; attempts 0 with other settings is an error; retryOn entries exact."""
    if retries is None:
        return
    rd = dict_of(retries)
    attempts = as_int(rd.get("attempts"))
    if attempts < 0:
        sink.add(f"{path}.attempts", "attempts cannot be negative")
    if attempts == 0 and (rd.get("perTryTimeout") is not None or rd.get("retryOn") or
                          rd.get("retryRemoteLocalities") is not None):
        sink.add(path, "http retry policy configured when attempts are set to 0 (disabled)")
    if rd.get("perTryTimeout") is not None:
        check_duration_field(sink, f"{path}.perTryTimeout", rd["perTryTimeout"])
    retry_on = rd.get("retryOn")
    if isinstance(retry_on, str) and retry_on:
        for policy in retry_on.split(","):  # Istio does not trim: "5xx, reset" is refused
            code = int(policy) if policy.isascii() and policy.isdigit() else 0
            if code not in HTTP_STATUS_TEXT and policy not in RETRY_ON:
                sink.add(f"{path}.retryOn", f'"{policy}" is not a valid retryOn policy')
    if rd.get("backoff") is not None:
        check_duration_field(sink, f"{path}.backoff", rd["backoff"])


def _check_rewrite(sink: IssueSink, path: str, r: dict[str, Any]) -> None:
    """validateHTTPRewrite / validateURIRegexRewrite / validateAuthorityRewrite."""
    rewrite = r.get("rewrite")
    rw = dict_of(rewrite)
    if rewrite is not None:
        rx = rw.get("uriRegexRewrite")
        if rw.get("uri") and rx is not None:
            sink.add(path + ".rewrite", "rewrite may only contain one of URI or UriRegexRewrite")
        elif not rw.get("uri") and rx is None and not rw.get("authority"):
            sink.add(path + ".rewrite", "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
                                        "Only one of URI or UriRegexRewrite may be specified")
        elif rx is not None:
            rxd = dict_of(rx)
            if not rxd.get("match") or not rxd.get("rewrite"):
                sink.add(path + ".rewrite.uriRegexRewrite", "UriRegexRewrite has errors: UriRegexRewrite requires "
                                                            "both Rewrite and Match fields to be specified")
            else:
                err = string_regexp_error(rxd["match"], "HTTPRewrite.UriRegexRewrite.Match")
                if err:
                    sink.add(path + ".rewrite.uriRegexRewrite.match", f"UriRegexRewrite has errors: {err}")
    current = rw.get("authority", "")
    req = dict_of(dict_of(r.get("headers")).get("request"))
    for op in ("set", "add"):
        for k, v in dict_of(req.get(op)).items():
            if not is_authority_header(k):
                continue
            if current:
                sink.add(f"{path}.headers.request.{op}.{k}", "authority header cannot be set multiple times: "
                                                             f'have "{current}", attempting to set "{v}"')
                return
            current = v


def check_http_extras(sink: IssueSink, path: str, r: dict[str, Any]) -> None:
    """The per-feature part of validateHTTPRoute: CORS, fault, mirrors, redirect, direct response, retries, rewrite."""
    _check_cors(sink, f"{path}.corsPolicy", r.get("corsPolicy"))
    _check_fault(sink, f"{path}.fault", r.get("fault"))
    _check_mirrors(sink, path, r)
    _check_redirect(sink, f"{path}.redirect", r.get("redirect"), list_of(r.get("match")))
    _check_direct_response(sink, f"{path}.directResponse", r.get("directResponse"))
    _check_retries(sink, f"{path}.retries", r.get("retries"))
    _check_rewrite(sink, path, r)
