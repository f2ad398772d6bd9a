"""Validate a document against a CRD's OpenAPI v3 schema the way the Kubernetes API server does.

Types, nullable, enums, required, unknown fields (kubectl --validate=strict), min/max, lengths, patterns,
item/property counts, list-type set/map uniqueness, oneOf/anyOf/allOf/not, and the CEL rules (api/cel.py).
Messages follow the API server's wording ("Required value", "in body should be at least 1 chars long", ...).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from sailmesh.api.cel import CelEvalError, evaluate

Report = Callable[[str, str], None]  # (field path, message)

_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _type_ok(schema: dict[str, Any], value: Any) -> bool:
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str | int) and not isinstance(value, bool)
    if t is None:
        return True
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _go_repr(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool) else f'"{_type_of(value)}"'


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _matches(schema: dict[str, Any], value: Any) -> bool:
    """Whether value satisfies a (value-validation-only) sub-schema used inside oneOf/anyOf/allOf/not."""
    errors: list[str] = []
    _validate(schema, value, "", lambda p, m: errors.append(m), strict=False)
    return not errors


def _validate(schema: dict[str, Any], value: Any, path: str, report: Report, strict: bool = True) -> None:
    if value is None:
        if schema.get("nullable") or (not schema.get("type") and not schema.get("x-kubernetes-int-or-string")):
            return
        report(path, f'Invalid value: "null": {path or "body"} in body must be of type '
                     f'{schema.get("type", "string")}: "null"')
        return
    if "x-sailmesh-deprecated" in schema:
        report(path, f"deprecated: {schema['x-sailmesh-deprecated']}")
    if not _type_ok(schema, value):
        want = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        report(path, f"Invalid value: {_go_repr(value)}: {path} in body must be of type {want}: "
                     f'"{_type_of(value)}"')
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        report(path, f"Unsupported value: {_go_repr(value)}: supported values: "
                     + ", ".join(_go_repr(e) for e in enum))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            report(path, f"Invalid value: {_go_repr(value)}: {path} in body should be at least "
                         f"{schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            report(path, f"Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not _regex(schema["pattern"]).search(value):
            report(path, f"Invalid value: {_go_repr(value)}: {path} in body should match '{schema['pattern']}'")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if value < lo or (schema.get("exclusiveMinimum") and value == lo):
                op = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                report(path, f"Invalid value: {_num(value)}: {path} in body should be {op} {_num(lo)}")
        if "maximum" in schema:
            hi = schema["maximum"]
            if value > hi or (schema.get("exclusiveMaximum") and value == hi):
                op = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                report(path, f"Invalid value: {_num(value)}: {path} in body should be {op} {_num(hi)}")
    elif isinstance(value, list):
        _validate_list(schema, value, path, report, strict)
    elif isinstance(value, dict):
        _validate_object(schema, value, path, report, strict)
    _validate_combinators(schema, value, path, report)
    for v in schema.get("x-kubernetes-validations") or ():
        try:
            ok = evaluate(v["rule"], value)
        except CelEvalError as e:
            report(path, f'Invalid value: "{_type_of(value)}": {v.get("message") or v["rule"]}: {e}')
            continue
        if not ok:
            report(path, f'Invalid value: "{_type_of(value)}": {v.get("message") or "failed rule: " + v["rule"]}')


def _validate_list(schema: dict[str, Any], value: list[Any], path: str, report: Report, strict: bool) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        report(path, f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        report(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(items, item, f"{path}[{i}]", report, strict)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                report(f"{path}[{i}]", f"Duplicate value: {_go_repr(item)}")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            k = tuple(json.dumps(item.get(n), sort_keys=True) for n in keys)
            if k in seen_keys:
                shown = ", ".join(f'"{n}":{json.dumps(item.get(n))}' for n in keys)
                report(f"{path}[{i}]", f"Duplicate value: map[string]interface {{}}{{{shown}}}")
            seen_keys.add(k)


def _validate_object(schema: dict[str, Any], value: dict[str, Any], path: str, report: Report,
                     strict: bool) -> None:
    prefix = f"{path}." if path else ""
    for req in schema.get("required") or ():
        if req not in value:
            report(prefix + req, "Required value")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        report(path, f"Invalid value: {len(value)}: {path} in body should have at least "
                     f"{schema['minProperties']} properties")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        report(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} properties")
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    for key, sub in value.items():
        child = prefix + key
        if props is not None and key in props:
            _validate(props[key], sub, child, report, strict)
        elif isinstance(extra, dict):
            _validate(extra, sub, child, report, strict)
        elif strict and not preserve and extra is not True and (props is not None or extra is False):
            report(child, f'unknown field "{child}"')


def _validate_combinators(schema: dict[str, Any], value: Any, path: str, report: Report) -> None:
    where = path or "body"
    one = schema.get("oneOf")
    if one is not None:
        n = sum(1 for s in one if _matches(s, value))
        if n != 1:
            report(path, f'Invalid value: "{_type_of(value)}": {where} must validate one and only one schema '
                         f"(oneOf). Found {n} valid alternatives")
    anyof = schema.get("anyOf")
    if anyof is not None and not any(_matches(s, value) for s in anyof):
        report(path, f'Invalid value: "{_type_of(value)}": {where} must validate at least one schema (anyOf)')
    for s in schema.get("allOf") or ():
        if not _matches(s, value):
            report(path, f'Invalid value: "{_type_of(value)}": {where} must validate all the schemas (allOf)')
    neg = schema.get("not")
    if neg is not None and _matches(neg, value):
        report(path, f'Invalid value: "{_type_of(value)}": {where} must not validate the schema (not)')


def validate_document(schema: dict[str, Any], doc: Any, report: Report) -> None:
    """Check a whole document (apiVersion, kind, metadata, spec, status) against a CRD openAPIV3Schema."""
    if not isinstance(doc, dict):
        report("", "document must be an object")
        return
    props = schema.get("properties") or {}
    for key, sub in doc.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key not in props:
            report(key, f'unknown field "{key}"')
            continue
        _validate(props[key], sub, key, report)
    for req in schema.get("required") or ():
        if req not in doc:
            report(req, "Required value")
