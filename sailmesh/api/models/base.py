"""Frozen-dataclass models that read and write Istio's camelCase wire form without losing anything.

A model field `per_try_timeout` maps to the wire key `perTryTimeout` (override with `wire("name")`); keys the
model does not declare are kept in `extra`, so `to_dict(from_dict(x)) == x` for every document.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from sailmesh.api.types import parse_duration

M = TypeVar("M", bound="Model")


def wire(name: str, default: Any = None) -> Any:
    """A model field whose wire key is not the camelCase of its attribute name."""
    return field(default=default, metadata={"wire": name})


def camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True)
class Duration:
    """A Go/protobuf duration as written (`"1.5s"`), with its value in seconds."""

    text: str

    @property
    def seconds(self) -> float:
        return parse_duration(self.text)

    def to_wire(self) -> str:
        return self.text


@dataclass(frozen=True)
class Percent:
    """An Istio Percent: `{value: 12.5}` on the wire (older fields use a bare integer)."""

    value: float
    bare: bool = False  # written as a plain number

    def to_wire(self) -> Any:
        return self.value if self.bare else {"value": self.value}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def _from_wire(tp: Any, value: Any) -> Any:
    tp = _strip_optional(tp)
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, list):
        (item,) = typing.get_args(tp)[:1]
        return tuple(_from_wire(item, v) for v in value)
    if origin in (Mapping, dict, typing.Mapping) and isinstance(value, dict):
        vt = typing.get_args(tp)[1]
        return {k: _from_wire(vt, v) for k, v in value.items()}
    if tp is Duration and isinstance(value, str):
        return Duration(value)
    if tp is Percent:
        if isinstance(value, dict) and set(value) <= {"value"}:
            return Percent(value.get("value", 0.0))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Percent(value, bare=True)
        return value
    if isinstance(tp, type) and issubclass(tp, Model) and isinstance(value, dict):
        return tp.from_dict(value)
    return value


def _to_wire(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, Duration | Percent):
        return value.to_wire()
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_wire(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Model:
    """Base of every typed model: `from_dict(wire)` and `to_dict()` (camelCase, unknown keys preserved)."""

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)
    _fields_by_wire: ClassVar[dict[type, dict[str, str]]] = {}

    @classmethod
    def _wire_map(cls) -> dict[str, str]:
        m = Model._fields_by_wire.get(cls)
        if m is None:
            m = {f.metadata.get("wire", camel(f.name)): f.name for f in dataclasses.fields(cls) if f.name != "extra"}
            Model._fields_by_wire[cls] = m
        return m

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any] | None) -> M:
        data = data or {}
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        wm = cls._wire_map()
        for key, value in data.items():
            attr = wm.get(key)
            if attr is None:
                extra[key] = value
            else:
                kwargs[attr] = _from_wire(hints[attr], value)
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr in self._wire_map().items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = _to_wire(value)
        out.update(self.extra)
        return out
