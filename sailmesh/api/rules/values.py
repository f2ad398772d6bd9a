"""Istio's value validators (pkg/config/validation, agent/, labels, protocol): why a value is bad, or None."""

from __future__ import annotations

import ipaddress
import re
from fractions import Fraction
from typing import Any

from sailmesh.api.issue import IssueSink

# labels.IsDNS1123Label / IsWildcardDNS1123Label: Istio's DNS labels accept upper case (pkg/config/labels).
_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_LABEL_RE = re.compile(f"^{_LABEL}$")
_WILDCARD_LABEL_RE = re.compile(rf"^(\*|(\*|\*-)?{_LABEL})$")
# labels.Instance.Validate: keys are [dns-prefix/]qualified-name, values qualified names or empty.
_QUALIFIED = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_TAG_RE = re.compile(rf"^({_LABEL}(?:\.{_LABEL})*/)?({_QUALIFIED})$")
_LABEL_VALUE_RE = re.compile(f"^({_QUALIFIED})?$")
# RFC 7230 token characters (validHeaderNameRegex), the stricter legacy set and the Kubernetes probe set.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
STRICT_HEADER_NAME_RE = re.compile(r"^[-_A-Za-z0-9]+$")
PROBE_HEADER_NAME_RE = re.compile(r"^[-A-Za-z0-9]+$")
_HEADER_VALUE_RE = re.compile("^[^\u0000-\u0008\u000a-\u001f\u007f]*$")
PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
JWT_CLAIM_HEADER = "@request.auth.claims"

# protocol.Parse (pkg/config/protocol), lower-cased; anything else is UnsupportedProtocol.
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "grpc": "GRPC", "grpc-web": "GRPC-Web", "http": "HTTP",
             "http_proxy": "HTTP_PROXY", "http2": "HTTP2", "https": "HTTPS", "tls": "TLS", "mongo": "Mongo",
             "redis": "Redis", "mysql": "MySQL"}
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
TCP_PROTOCOLS = frozenset({"TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL"})

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
MS = 10**6


def dict_of(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def list_of(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def is_label(s: Any) -> bool:
    """labels.IsDNS1123Label: at most 63 characters, letters (either case), digits and inner hyphens."""
    return isinstance(s, str) and len(s) <= 63 and bool(_LABEL_RE.match(s))


def protocol(s: Any) -> str:
    """protocol.Parse: the canonical protocol name, or 'Unsupported'."""
    return PROTOCOLS.get(s.lower(), "Unsupported") if isinstance(s, str) else "Unsupported"


def protocol_error(s: Any) -> str | None:
    """ValidateProtocol: empty (sniffing) or a known protocol."""
    if s in ("", None) or protocol(s) != "Unsupported":
        return None
    return f"unsupported protocol: {s}"


def port_name_error(name: Any) -> str | None:
    """ValidatePortName."""
    return None if is_label(name) else f"invalid port name: {name}"


def port_error(port: Any) -> str | None:
    """agent.ValidatePort."""
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return None
    return f"port number {port} must be in the range 1..65535"


def _dns_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _dns_labels_error(domain: str) -> str | None:
    """agent.ValidateDNS1123Labels: no all-numeric top-level domain, every label a DNS label (trailing dot ok)."""
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not is_label(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def fqdn_error(name: Any) -> str | None:
    """agent.ValidateFQDN (a short name such as `reviews` passes: it is one label)."""
    if not isinstance(name, str):
        return "empty domain name not allowed"
    return _dns_preconditions(name) or _dns_labels_error(name)


def wildcard_domain_error(domain: Any) -> str | None:
    """agent.ValidateWildcardDomain: an FQDN whose first label may be `*`, `*x` or `*-x`."""
    if not isinstance(domain, str):
        return "empty domain name not allowed"
    err = _dns_preconditions(domain)
    if err:
        return err
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL_RE.match(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _dns_labels_error(rest) if dot else None


def partial_wildcard_error(host: str) -> str | None:
    """agent.ValidatePartialWildCard."""
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f"partial wildcard {host!r} not allowed"
    return None


def is_ip(s: Any) -> bool:
    """netutil.IsValidIPAddress / netip.ParseAddr."""
    if not isinstance(s, str):
        return False
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def ip_error(s: Any) -> str | None:
    """agent.ValidateIPAddress."""
    return None if is_ip(s) else f"{s} is not a valid IP"


def ip_subnet_error(s: Any) -> str | None:
    """agent.ValidateIPSubnet: `a.b.c.d/xx` (host bits may be set, as netip.ParsePrefix allows) or an address."""
    if isinstance(s, str) and s.count("/") == 1:
        addr, _, bits = s.partition("/")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return f"{s} is not a valid CIDR block"
        if not bits.isdigit() or int(bits) > ip.max_prefixlen or "%" in addr:
            return f"{s} is not a valid CIDR block"
        return None
    return ip_error(s)


def unix_address_error(addr: str) -> str | None:
    """ValidateUnixAddress: an absolute file path, or an abstract socket `@name`."""
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):
        return None
    if not addr.startswith("/") or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


def duration_ns(text: Any) -> int | None:
    """A Go duration string as whole nanoseconds (time.ParseDuration truncates below 1ns), or None if malformed."""
    if not isinstance(text, str) or not text:
        return None
    s = text[1:] if text[0] == "+" else text
    if s == "0":
        return 0
    pos, total = 0, Fraction(0)
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            return None
        total += Fraction(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return int(total) if pos else None


def duration_error(text: Any) -> str | None:
    """agent.ValidateDuration: at least 1ms and a whole number of milliseconds (`1.5ms` is refused)."""
    ns = duration_ns(text)
    if ns is None:
        return f"invalid duration {text!r}: expected a string such as '10s' or '500ms'"
    if ns < MS:
        return "duration must be greater than 1ms"
    if ns % MS:
        return "only durations to ms precision are supported"
    return None


def check_duration_field(sink: IssueSink, path: str, value: Any) -> None:
    err = duration_error(value)
    if err:
        sink.add(path, err)


def label_errors(labels: Any) -> list[str]:
    """labels.Instance.Validate: keys `[prefix/]name` (prefix <= 253, name <= 63), values qualified names."""
    out: list[str] = []
    for k, v in dict_of(labels).items():
        m = _TAG_RE.match(k) if isinstance(k, str) else None
        if m is None:
            out.append(f"invalid tag key: {k!r}")
        elif m.group(1) and len(m.group(1)) - 1 > 253:
            out.append(f"invalid tag key: {k!r} (DNS prefix too long)")
        elif len(m.group(2)) > 63:
            out.append(f"invalid tag key: {k!r} (name too long)")
        if not isinstance(v, str) or not _LABEL_VALUE_RE.match(v):
            out.append(f"invalid tag value: {v!r}")
    return out


def check_labels(sink: IssueSink, path: str, labels: Any) -> None:
    for err in label_errors(labels):
        sink.add(path, err)


def routing_claims(name: str) -> list[str] | None:
    """Istio's jwt.ToRoutingClaim(name): the claim path of `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`
    (["a", "b"]), None for any other header name."""
    if not name.lower().startswith(JWT_CLAIM_HEADER):
        return None
    rest = name[len(JWT_CLAIM_HEADER):]
    if rest.startswith(".") and len(rest) > 1:
        return rest[1:].split(".")
    if rest.startswith("[") and rest.endswith("]") and len(rest) > 2:
        return rest[1:-1].split("][")
    return None


def is_jwt_claim_header(name: str) -> bool:
    """jwt.ToRoutingClaim(name).Match: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`."""
    return routing_claims(name) is not None


def header_name_or_claim_error(name: str) -> str | None:
    """ValidateHTTPHeaderNameOrJwtClaimRoute: any RFC 7230 token (upper case allowed), a pseudo header or a claim."""
    if not name:
        return "header name cannot be empty"
    if is_jwt_claim_header(name) or name in PSEUDO_HEADERS or HEADER_NAME_RE.match(name):
        return None
    return f"header name {name} is not a valid header name"


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def header_add_set_error(name: str) -> str | None:
    """ValidateHTTPHeaderWithAuthorityOperationName (request add/set): no `:` names except the authority."""
    if not name:
        return "header name cannot be empty"
    if _is_internal_header(name) and not is_authority_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def header_operation_error(name: str) -> str | None:
    """ValidateHTTPHeaderOperationName (request remove, response add/set/remove): not Host, no `:` prefix."""
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f'invalid header "{name}": cannot set Host header'
    if _is_internal_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def cors_header_error(name: Any) -> str | None:
    """ValidateCORSHTTPHeaderName."""
    if not name:
        return "header name cannot be empty"
    if name == "*" or (isinstance(name, str) and HEADER_NAME_RE.match(name)):
        return None
    return f"header name {name} is not a valid header name"


def header_value_error(value: Any) -> str | None:
    """ValidateHTTPHeaderValue: no control characters, and Envoy's `%VAR%` / `%VAR(args)%` syntax (header_parser.cc)."""
    if not isinstance(value, str):
        return None
    if not _HEADER_VALUE_RE.match(value):
        return f"header value configuration {value} is invalid"
    err = _header_value_syntax(value)
    return f"header value configuration: {err}" if err else None


def _header_value_syntax(value: str) -> str | None:  # a state machine, as Envoy's header_parser.cc
    state, pos = "literal", 0
    while pos < len(value):
        ch = value[pos]
        has_next = pos + 1 < len(value)
        if state == "literal":
            if ch == "%":
                if not has_next:
                    return "invalid header configuration. Un-escaped %"
                if value[pos + 1] == "%":
                    pos += 1
                else:
                    state = "name"
        elif state == "name":
            if ch == "%":
                state = "literal"
            elif ch == "(":
                state = "array"
        elif state == "array":
            if ch == "[":
                state = "string_start"
            elif ch != " ":
                state = "string"
        elif state == "delim":
            if ch == ",":
                state = "string_start"
            elif ch == "]":
                state = "args_end"
            elif ch != " ":
                return "invalid header configuration. Expecting ',', ']', or whitespace"
        elif state == "string_start":
            if ch == '"':
                state = "string"
            elif ch != " ":
                return "invalid header configuration. Expecting '\"'"
        elif state == "string":
            if ch == "\\":
                if not has_next:
                    return "invalid header configuration. Un-terminated backslash in JSON string"
                pos += 1
            elif ch == ")":
                state = "var_end"
            elif ch == '"':
                state = "delim"
        elif state == "args_end":
            if ch == ")":
                state = "var_end"
            elif ch != " ":
                return "invalid header configuration. Expecting ')' or whitespace"
        elif state == "var_end":
            if ch == "%":
                state = "literal"
            elif ch != " ":
                return "invalid header configuration. Expecting '%' or whitespace after"
        pos += 1
    if state != "literal":
        return f"invalid header configuration. Un-terminated variable expression '{value}'"
    return None


def percentage_error(value: Any) -> str | None:
    """validatePercentage (Percent messages): 0, or 0.0001..100."""
    v = dict_of(value).get("value", 0.0) if isinstance(value, dict) else value
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None  # the schema reports the type
    if v < 0 or v > 100 or 0 < v < 0.0001:
        return f"percentage {v:g} is neither 0.0, nor in range [0.0001, 100.0]"
    return None


def int_percent_error(value: Any) -> str | None:
    """ValidatePercent (int32 fields)."""
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 100:
        return f"percentage {value} is not in range 0..100"
    return None


def workload_selector_issues(sink: IssueSink, path: str, selector: Any, labels_key: str) -> None:
    """validateWorkloadSelector / ValidateAlphaWorkloadSelector: no empty or wildcard keys; no labels is a warning."""
    if selector is None or not isinstance(selector, dict):
        return
    labels = dict_of(selector.get(labels_key))
    for k, v in labels.items():
        if k == "":
            sink.add(f"{path}.{labels_key}", f'empty key is not supported in selector: "={v}"')
        if "*" in str(k) or (isinstance(v, str) and "*" in v):
            sink.add(f"{path}.{labels_key}.{k}", f'wildcard is not supported in selector: "{k}={v}"')
    if not labels:
        sink.warn(path, "workload selector specified without labels")


GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
INTERNAL_ANNOTATIONS = ("internal.istio.io/webhook-always-reject", "internal.istio.io/parent-namespace",
                        "internal.istio.io/parents")


def metadata_error(kind: str, namespace: str, name: str, annotations: Any, spec: Any) -> str | None:
    """validateMetadata / checkDryRunAnnotation: `istio.io/dry-run` only on ALLOW/DENY AuthorizationPolicies with a
    Go boolean, and none of Istio's internal annotations (Istio then skips the kind's own checks)."""
    ann = dict_of(annotations)
    if "istio.io/dry-run" in ann:
        val = ann["istio.io/dry-run"]
        if kind != "AuthorizationPolicy":
            return f"{namespace}/{name} has unsupported annotation istio.io/dry-run, please remove the annotation"
        action = dict_of(spec).get("action", "ALLOW")
        if action not in ("ALLOW", "DENY"):
            return f"the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action " \
                   f"{action} in {namespace}/{name}"
        if val not in GO_BOOLS:
            return f"{namespace}/{name} has annotation istio.io/dry-run with invalid value ({val}): " \
                   f'strconv.ParseBool: parsing "{val}": invalid syntax'
    if INTERNAL_ANNOTATIONS[0] in ann:
        return f'"{INTERNAL_ANNOTATIONS[0]}" annotation found, rejecting'
    for a in INTERNAL_ANNOTATIONS[1:]:
        if a in ann:
            return f'"{a}" annotation found, this may not be set by users'
    return None
