"""`sailmesh explain`: the HTTP filters of a hop that are not routing or RBAC, replayed on their config JSON. Pure.

- envoy.filters.http.ext_authz (AuthorizationPolicy CUSTOM): Istio runs it only for requests a CUSTOM rule matches
  (an RBAC filter before it evaluates those rules as shadow rules and names the matching one in its metadata,
  `filter_enabled_metadata`); the answer then comes from the provider, which the simulation cannot ask: it says
  which provider is consulted, what is sent, and what each answer (and an unreachable provider) leads to.
- envoy.filters.http.local_ratelimit (EnvoyFilter, sailmesh's RateLimit API): the token bucket that applies to the
  request (a descriptor's, from the filter's `rate_limits` actions, else the filter's, else the route's per-filter
  config), the share of requests it is enabled and enforced for (Envoy's default when unset: 0%), and that an empty
  bucket answers 429 with response flag RL (local_rate_limited). How many tokens remain is Envoy's state: not known.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sailmesh.explain.routematch import Request

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
EXT_AUTHZ_SHADOW_PREFIX = "istio_ext_authz_"  # Istio's RBACExtAuthzShadowRulesStatPrefix
DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def plain(node: Any) -> Any:
    """A filter config's JSON with a TypedStruct (EnvoyFilter's `udpa.type.v1.TypedStruct`/`xds.type.v3`) opened
    and every key in proto field names (snake_case), as either form may reach a dump."""
    if isinstance(node, dict):
        if str(node.get("@type", "")).endswith("TypedStruct") and isinstance(node.get("value"), dict):
            return plain({"@type": node.get("type_url", ""), **node["value"]})
        return {(_snake(k) if not k.startswith("@") else k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def percent(fraction: Mapping[str, Any] | None) -> float | None:
    """A RuntimeFractionalPercent's (or FractionalPercent's) default in percent; None when unset."""
    if not fraction:
        return None
    value = fraction.get("default_value", fraction)
    return 100.0 * float(value.get("numerator", 0)) / DENOMINATORS.get(str(value.get("denominator", "HUNDRED")), 100)


def _duration(text: Any) -> str:
    return str(text or "?")


# --- ext_authz (CUSTOM) -------------------------------------------------------------------------------------------

def provider_of(cfg: Mapping[str, Any]) -> str:
    """Where ext_authz sends the check: the HTTP service's URI (and cluster) or the gRPC service's cluster."""
    http = cfg.get("http_service")
    if http:
        uri = http.get("server_uri", {})
        return f"HTTP {uri.get('uri', '?')}{http.get('path_prefix', '')} (cluster {uri.get('cluster', '?')})"
    grpc = cfg.get("grpc_service", {})
    target = grpc.get("envoy_grpc", {}).get("cluster_name") or grpc.get("google_grpc", {}).get("target_uri", "?")
    return f"gRPC envoy.service.auth.v3.Authorization/Check on cluster {target}"


def ext_authz(cfg: Mapping[str, Any], custom_match: str | None) -> dict[str, Any]:
    """One ext_authz filter for this request. `custom_match`: the CUSTOM rule the shadow RBAC filter before it
    matched ("" none, None when there is no such filter: the authorizer is asked for every request)."""
    cfg = plain(cfg)
    enabled = (cfg.get("filter_enabled_metadata") or {}).get("value", {}).get("string_match", {}).get("prefix", "")
    provider = provider_of(cfg)
    if custom_match is not None and enabled and not custom_match.startswith(enabled):
        return {"filter": "ext_authz (CUSTOM)", "consulted": False, "provider": provider,
                "decision": f"not consulted: no CUSTOM rule for this provider matches the request ({provider})"}
    on_error = _status((cfg.get("status_on_error") or {}).get("code", 403))
    down = "the request passes (failOpen)" if cfg.get("failure_mode_allow") else f"{on_error} (the provider's " \
        "failure is a denial; response flag UAEX)"
    heads = (cfg.get("allowed_headers") or cfg.get("http_service", {}).get("authorization_request", {})
             .get("allowed_headers") or {}).get("patterns")
    sent = "the request's headers" + (f" matching {[_pattern(p) for p in heads]}" if heads else "")
    by = f", matched by CUSTOM rule {custom_match}" if custom_match else ""
    return {"filter": "ext_authz (CUSTOM)", "consulted": True, "provider": provider,
            "decision": f"asks {provider}{by}, sending {sent}; the outcome depends on its answer: OK continues to "
                        f"the DENY and ALLOW policies, a denial is returned to the client as the provider sent it "
                        f"(403 unless it says otherwise; response flag UAEX); unreachable or timed out: {down}"}


def _pattern(p: Mapping[str, Any]) -> str:
    kind = next(iter(k for k in p if k != "ignore_case"), "exact")
    return f"{kind} {p[kind]!r}"


# --- local rate limit ---------------------------------------------------------------------------------------------

def _header_matches(headers: list[Any], req: Request) -> bool:
    from envoy.config.route.v3 import route_components_pb2 as rc
    from google.protobuf import json_format

    from sailmesh.explain.routematch import header_match

    return all(header_match(json_format.ParseDict(h, rc.HeaderMatcher(), ignore_unknown_fields=True), req)[0]
               for h in headers)


def _entry(action: Mapping[str, Any], req: Request, source_ip: str) -> tuple[str, str] | None:
    """One rate_limits action's descriptor entry for the request; None: the action produces none (then the whole
    descriptor is not generated, as Envoy does)."""
    if "header_value_match" in action:
        a = action["header_value_match"]
        if _header_matches(a.get("headers", []), req) != a.get("expect_match", True):
            return None
        return str(a.get("descriptor_key", "header_match")), str(a.get("descriptor_value", ""))
    if "request_headers" in action:
        a = action["request_headers"]
        value = req.header(str(a.get("header_name", "")))
        return (str(a.get("descriptor_key", "")), value) if value is not None else None
    if "remote_address" in action:
        return "remote_address", source_ip
    if "generic_key" in action:
        a = action["generic_key"]
        return str(a.get("descriptor_key", "generic_key")), str(a.get("descriptor_value", ""))
    return None


def descriptors(rate_limits: list[Any], req: Request, source_ip: str) -> list[list[tuple[str, str]]]:
    """The descriptors the request generates from `rate_limits` (each a list of (key, value) entries)."""
    out = []
    for rl in rate_limits:
        entries = [_entry(a, req, source_ip) for a in rl.get("actions", [])]
        if entries and all(e is not None for e in entries):
            out.append([e for e in entries if e is not None])
    return out


def _status(code: Any) -> int:
    """An HttpStatus code as a number (the dump's JSON names it: `TooManyRequests`)."""
    if isinstance(code, str) and not code.isdigit():
        from envoy.type.v3 import http_status_pb2

        return int(http_status_pb2.StatusCode.Value(code))
    return int(code)


def _num(x: Any) -> Any:
    """A count as written (a TypedStruct carries every number as a float)."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _bucket(tb: Mapping[str, Any]) -> str:
    fill = _num(tb.get("tokens_per_fill", 1))
    return (f"a bucket of {_num(tb.get('max_tokens', '?'))} tokens, {fill} added every "
            f"{_duration(tb.get('fill_interval'))}")


def local_rate_limit(cfg: Mapping[str, Any], route_cfg: Mapping[str, Any] | None, req: Request,
                     source_ip: str) -> dict[str, Any]:
    """The filter's verdict for one request: which bucket, enabled/enforced shares, and a 429 when it is empty.
    `route_cfg`: the chosen route's (or virtual host's) per-filter config, which replaces the filter's."""
    cfg = plain(dict(route_cfg) if route_cfg else dict(cfg))
    where = "the route's per-filter config" if route_cfg else "the filter's config"
    enabled, enforced = percent(cfg.get("filter_enabled")), percent(cfg.get("filter_enforced"))
    status = _status((cfg.get("status") or {}).get("code", 429))
    matched, sizes = [], []
    for d in descriptors(cfg.get("rate_limits", []), req, source_ip):
        for conf in cfg.get("descriptors", []):
            entries = [(str(e.get("key", "")), str(e.get("value", ""))) for e in conf.get("entries", [])]
            if len(entries) == len(d) and all(k == dk and (not v or v == dv)
                                              for (k, v), (dk, dv) in zip(entries, d, strict=True)):
                label = ", ".join(f"{k}={v or dv}" + ("" if v else " (a bucket per value)")
                                  for (k, v), (_, dv) in zip(entries, d, strict=True))
                matched.append(f"descriptor {label}: {_bucket(conf.get('token_bucket', {}))}")
                sizes.append(_num(conf.get("token_bucket", {}).get("max_tokens")))
    if matched:
        bucket = "; ".join(matched)
    elif cfg.get("token_bucket"):
        bucket = _bucket(cfg["token_bucket"])
        sizes.append(_num(cfg["token_bucket"].get("max_tokens")))
    else:
        return {"filter": "local rate limit", "limited": False, "bucket": "",
                "decision": f"no bucket applies to this request ({where}: no descriptor matches, no default "
                            "bucket): not limited"}
    share = (f"enabled for {enabled:g}% of requests" if enabled is not None else
             "enabled for 0% of requests (filter_enabled unset: Envoy's default)")
    share += f", enforced for {enforced:g}%" if enforced is not None else \
        ", enforced for 0% (filter_enforced unset: only counted)"
    active = bool(enabled) and bool(enforced)
    headers = [f"{h.get('header', {}).get('key')}: {h.get('header', {}).get('value')}"
               for h in cfg.get("response_headers_to_add", [])]
    then = (f"while tokens remain the request passes and takes one; when the bucket is empty: {status} "
            f"(local_rate_limited, response flag RL)" + (f" with {', '.join(headers)}" if headers else "")) \
        if active else "never limited at these shares"
    return {"filter": "local rate limit", "limited": active, "bucket": bucket, "status": status,
            "max_tokens": min((s for s in sizes if isinstance(s, int)), default=None),
            "decision": f"{bucket} ({where}; {share}): {then}"}
