"""Checks shared by several kinds: DNS-1123 names (Kubernetes), ports, RE2 regexes, exportTo."""

from __future__ import annotations

import functools
import re
from typing import Any, TypeGuard

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.values import is_label

try:  # RE2 is what Envoy and Istio use; google-re2 provides it when installed
    import re2 as _re2
except ImportError:  # pragma: no cover - depends on the environment
    _re2 = None

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Constructs Python's `re` accepts but RE2 refuses (backreferences, lookaround, possessive/atomic groups).
_NOT_RE2 = re.compile(r"\\[1-9]|\(\?[=!]|\(\?<[=!]|\(\?>|\(\?P=|[*+?}]\+")


def is_dns1123_label(s: Any) -> TypeGuard[str]:
    return isinstance(s, str) and len(s) <= 63 and bool(DNS1123_LABEL.match(s))


def port_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def check_port(sink: IssueSink, path: str, value: Any) -> None:
    if not port_ok(value):
        sink.add(path, f"port number {value!r} must be between 1 and 65535")


@functools.cache
def compile_regex(pattern: str) -> Any:
    """A compiled RE2 pattern (google-re2), or Python's `re` when RE2 is not installed."""
    if _re2 is not None:
        options = _re2.Options()
        options.log_errors = False
        return _re2.compile(pattern, options)
    return re.compile(pattern)


@functools.cache
def regex_error(pattern: str) -> str | None:
    """Why pattern is not a valid RE2 regular expression (Envoy's dialect), or None."""
    if _re2 is not None:
        options = _re2.Options()
        options.log_errors = False  # else RE2 writes every parse error to stderr
        try:
            _re2.compile(pattern, options)
        except _re2.error as e:
            reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            return f"invalid regex {pattern!r}: {reason}"
        return None
    try:
        re.compile(pattern)
    except re.error as e:
        return f"invalid regex {pattern!r}: {e}"
    if _NOT_RE2.search(pattern):
        return f"invalid regex {pattern!r}: RE2 does not support backreferences, lookaround or possessive matches"
    return None


def check_export_to(sink: IssueSink, path: str, values: Any, service_entry: bool = False,
                    dr_selector: bool = False) -> None:
    """validateExportTo: no duplicates (`.` equals the own namespace), `*` alone, `~` only alone in ServiceEntries."""
    entries = [v for v in (values if isinstance(values, list) else []) if isinstance(v, str)]
    if not entries:
        return
    ns = sink.resource.namespace
    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = ns if e == "." else e
        if key in seen:
            sink.add(f"{path}[{i}]", f"duplicate entries in exportTo: . and current namespace {ns}" if key != e
                     else f"duplicate entries in exportTo for entry {e}")
        elif service_entry and e == "~":
            seen.add(key)
        elif key == "~":
            sink.add(f"{path}[{i}]", "exportTo ~ (none) is not allowed for Istio configuration objects")
        elif key not in ("*", ".") and not is_label(key):
            sink.add(f"{path}[{i}]", "only .,*, or a valid DNS 1123 label is allowed as exportTo entry")
        else:
            seen.add(key)
    if dr_selector and seen:
        if ns in seen:
            if len(seen) > 1:
                sink.add(path, "destination rule with workload selector cannot have multiple entries in exportTo")
        else:
            sink.add(path, "destination rule with workload selector cannot have exportTo beyond current namespace")
    if "*" in seen and len(entries) > 1:
        sink.add(path, "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(entries) > 1:
        sink.add(path, "cannot export service entry to no one (~) and someone")
