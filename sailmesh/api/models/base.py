"""The base of the typed models: frozen msgspec Structs read from Istio's camelCase spec, built once per resource.

Why msgspec and not the frozen dataclasses this package first had: building the models of the control-plane
benchmark's 5,000-service mesh (10,001 VirtualServices, DestinationRules and a Sidecar) took 2.7 s and kept 24 MB
with the dataclasses, 0.4 s and 10 MB with msgspec (`python -m bench.model_build`, docs/benchmarks.md).

A model attribute `per_try_timeout` reads the wire key `perTryTimeout` (override with `msgspec.field(name=...)`).
Unset fields are None; keys a model does not declare are ignored (the raw `Resource.spec` keeps them for printing
and round-tripping). A spec whose shape does not fit its model raises ModelError, naming the field.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from sailmesh.api.types import BadValue, parse_duration
from sailmesh.errors import ModelError

M = TypeVar("M", bound="Model")


class Duration(str):
    """A Go/protobuf duration as written (`"1.5s"`); `seconds` is its value. Checked when the model is built."""

    __slots__ = ()

    @property
    def seconds(self) -> float:
        return parse_duration(str(self))


class Model(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False):
    """Base of every typed model (immutable: frozen Structs, tuples for lists).

    Subclasses repeat `frozen=True`: msgspec inherits it, but type checkers (PEP 681) do not, and mypy refuses
    a non-frozen subclass of a frozen one.

    Not tracked by the cyclic GC (`gc=False`): a model holds only strings, numbers, tuples, other models and
    plain mappings of the parsed spec, none of which can refer back to it, so no cycle can form; at 1,000
    services this keeps ~18,000 objects (a sixth of a snapshot's) out of every full collection.
    """


class Percent(Model, frozen=True):
    """An Istio Percent: `{value: 12.5}`."""

    value: float = 0.0


def _dec_hook(tp: type, value: Any) -> Any:
    if tp is Duration:
        if not isinstance(value, str):
            raise ValueError(f"expected a duration string such as '10s', got {type(value).__name__}")
        try:
            parse_duration(value)
        except BadValue as e:
            raise ValueError(str(e)) from None
        return Duration(value)
    raise NotImplementedError(f"no decoder for {tp}")


def build(cls: type[M], spec: Any, resource: str = "") -> M:
    """`spec` (the camelCase mapping as parsed) as a `cls`; ModelError names the field that does not fit."""
    try:
        return msgspec.convert(spec if spec is not None else {}, cls, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        reason, _, where = str(e).partition(" - at `")
        path = "spec" + where.rstrip("`").removeprefix("$") if where else "spec"
        raise ModelError(resource or cls.__name__, path, reason) from None
