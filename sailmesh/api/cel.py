"""Istio's CRD `x-kubernetes-validations` CEL rules, implemented by hand (the rule text is the key).

No CEL interpreter is installed, and Istio's CRDs use a fixed set of 36 rules; each is written here as a
Python predicate with CEL semantics (`has()` = field present; `int(key)` may fail with a conversion error).
A rule this table does not know is reported, so a new CRD cannot be accepted unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sailmesh.api.types import BadValue, parse_duration


class CelEvalError(Exception):
    """The rule could not be evaluated on this value (Kubernetes reports it as an error too)."""


def _has(obj: Any, name: str) -> bool:
    return isinstance(obj, dict) and name in obj


def _count(obj: Any, *names: str) -> int:
    return sum(1 for n in names if _has(obj, n))


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_BAD_URL_CHARS = re.compile(r"[\s<>\"{}|\\^`#]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_url(text: str) -> bool:
    """CEL's isURL: Go's url.ParseRequestURI succeeds (absolute URI or absolute path, no fragment)."""
    if not isinstance(text, str) or not text or _BAD_ESCAPE.search(text):
        return False
    if text.startswith("/"):
        return not re.search(r"[\s]", text)
    if not _SCHEME.match(text):
        return False
    rest = text.split(":", 1)[1]
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0].split("?", 1)[0]
        if _BAD_URL_CHARS.search(authority):
            return False
    return not re.search(r"[\s]", text)


def url_scheme(text: str) -> str:
    """CEL's url(text).getScheme(); raises CelEvalError when text is not a URL."""
    if not is_url(text):
        raise CelEvalError(f"{text!r} is not a valid URL")
    return urlsplit(text).scheme if _SCHEME.match(text) else ""


def _wasm_url(schemes: tuple[str, ...]) -> Callable[[Any], bool]:
    def rule(s: Any) -> bool:
        if is_url(s):
            return url_scheme(s) in schemes
        return is_url("http://" + s) and url_scheme("http://" + s) in schemes
    return rule


def _duration_ge_1ms(s: Any) -> bool:
    if not isinstance(s, str) or s.startswith("-"):
        raise CelEvalError(f"invalid duration {s!r}")
    try:
        return parse_duration(s) >= 0.001 - 1e-12
    except BadValue as e:
        raise CelEvalError(str(e)) from None


def _int_key(k: str) -> int:
    try:
        return int(k, 10)
    except ValueError:
        raise CelEvalError(f"type conversion error from 'string' to 'int' ({k!r})") from None


_PORT_NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WASM_SCHEMES_A = ("", "http", "https", "file", "oci")

RULES: dict[str, Callable[[Any], bool]] = {
    '(has(self.selector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda s: _count(s, "selector", "targetRefs") <= 1,
    'has(self.wasm) != has(self.lua)': lambda s: _has(s, "wasm") != _has(s, "lua"),
    'self.all(key, !key.contains("*"))': lambda s: all("*" not in k for k in s),
    'self.all(key, key.size() != 0)': lambda s: all(len(k) != 0 for k in s),
    '!self.contains("*")': lambda s: "*" not in s,
    'self.size() == 0': lambda s: len(s) == 0,
    'isURL(self) ? (url(self).getScheme() in ["", "http", "https", "file", "oci"]) : (isURL("http://" + self) &&\n'
    'url("http://" + self).getScheme() in ["", "http", "https", "file", "oci"])': _wasm_url(_WASM_SCHEMES_A),
    'isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) &&\n'
    'url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])': _wasm_url(_WASM_SCHEMES_A),
    '(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)':
        lambda s: s.get("valueFrom", "") != "HOST" or "value" not in s,
    '(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda s: _count(s, "selector", "targetRef", "targetRefs") <= 1,
    "duration(self) >= duration('1ms')": _duration_ge_1ms,
    '(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda s: _count(s, "workloadSelector", "targetRefs") <= 1,
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : '
    '!has(self.waypoint)':
        lambda s: (_has(s, "waypoint") if s.get("context") == "WAYPOINT" else not _has(s, "waypoint")),
    '0 < self && self <= 65535': lambda s: 0 < s <= 65535,
    '(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1':
        lambda s: _count(s, "tlsCertificates", "credentialNames") <= 1,
    '(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1':
        lambda s: _count(s, "credentialName", "credentialNames") <= 1,
    '(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1':
        lambda s: _count(s, "credentialNames", "tlsCertificates") <= 1,
    '(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1':
        lambda s: _count(s, "workloadSelector", "endpoints") <= 1,
    '!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && !((has(self.resolution) ? '
    'self.resolution : "NONE") in ["STATIC", "NONE"]))':
        lambda s: not (any("/" in a for a in s.get("addresses") or [])
                       and s.get("resolution", "NONE") not in ("STATIC", "NONE")),
    '((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true':
        lambda s: not _has(s, "endpoints") if s.get("resolution", "NONE") == "NONE" else True,
    '((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? ((has(self.endpoints) ? '
    'self.endpoints : []).size() <= 1) : true':
        lambda s: len(s.get("endpoints") or []) <= 1 if s.get("resolution", "") == "DNS_ROUND_ROBIN" else True,
    'has(self.address) || has(self.network)': lambda s: _has(s, "address") or _has(s, "network"),
    '(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true':
        lambda s: not _has(s, "ports") if str(s.get("address", "")).startswith("unix://") else True,
    'self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true':
        lambda s: s[7:8] in ("/", "@") if s.startswith("unix://") else True,
    'self.startsWith("unix://") ? !self.endsWith("/") : true':
        lambda s: not s.endswith("/") if s.startswith("unix://") else True,
    'self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))':
        lambda s: all(len(k) < 63 and _PORT_NAME.search(k) for k in s),
    'self != "*"': lambda s: s != "*",
    'self.all(l1, self.exists_one(l2, l1.number == l2.number))':
        lambda s: all(sum(1 for b in s if b.get("number") == a.get("number")) == 1 for a in s),
    'self in ["", "HTTP", "HTTPS"]': lambda s: s in ("", "HTTP", "HTTPS"),
    '(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) &&\n'
    '!has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true':
        lambda s: (_count(s, "principals", "notPrincipals", "namespaces", "notNamespaces") == 0
                   if _count(s, "serviceAccounts", "notServiceAccounts") else True),
    'has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? '
    'self.selector.matchLabels : {}).size() > 0) : true':
        lambda s: (len((s.get("selector") or {}).get("matchLabels") or {}) > 0) if _has(s, "portLevelMtls")
        else True,
    'self.all(key, 0 < int(key) && int(key) <= 65535)': lambda s: all(0 < _int_key(k) <= 65535 for k in s),
    '(has(self.jwksUri) ? 1 : 0) + (has(self.jwks_uri) ? 1 : 0) + (has(self.jwks) ? 1 : 0) <= 1':
        lambda s: _count(s, "jwksUri", "jwks_uri", "jwks") <= 1,
    'url(self).getScheme() in ["http", "https"]': lambda s: url_scheme(s) in ("http", "https"),
    '((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true':
        lambda s: s.get("value", "") != "" if s.get("operation", "") == "UPSERT" else True,
    '((has(self.operation) ? self.operation : "") == "REMOVE") ? !has(self.value) : true':
        lambda s: not _has(s, "value") if s.get("operation", "") == "REMOVE" else True,
}


def evaluate(rule: str, value: Any) -> bool:
    """True when `value` satisfies the CEL rule; CelEvalError when it cannot be evaluated or is unknown."""
    fn = RULES.get(rule)
    if fn is None:
        raise CelEvalError(f"unsupported CEL rule {rule!r}")
    try:
        return bool(fn(value))
    except CelEvalError:
        raise
    except (TypeError, AttributeError, KeyError) as e:
        raise CelEvalError(f"no such overload ({e})") from None
