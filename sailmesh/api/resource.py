"""The generic Resource: one parsed config object with where it came from."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sailmesh.api.models import Model

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Source:
    """Where a resource was read from: file and 1-based line of the document start."""

    file: str = ""
    line: int = 0
    # 1-based line of each field path ("spec.http[0].route[1].weight") inside the document.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def line_of(self, path: str) -> int:
        """Best line for a field path: the path itself, else its nearest recorded parent."""
        p = path
        while p:
            if p in self.lines:
                return self.lines[p]
            cut = max(p.rfind("."), p.rfind("["))
            p = p[:cut] if cut > 0 else ""
        return self.line


@dataclass(frozen=True)
class ResourceKey:
    """Identity of a resource: kind, namespace, name (group-less, as Istio messages print it)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Resource:
    """One config object. `spec` is the raw, camelCase spec as written (read-only by convention), for printing,
    round-tripping and the validator; `model` is the same spec typed (what generators and analyzers read)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: Source = field(default_factory=Source, compare=False)
    # The whole document as parsed (metadata, status, data, ...), for kinds with more than spec.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    generation: int = 0

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.kind, self.namespace, self.name)

    @cached_property
    def creation_key(self) -> tuple[float, str, str]:
        """Istio's order for "the oldest wins": creation time, then name, then namespace (sortConfigByCreationTime).

        Computed once per object (resources are immutable; sorting a thousand of them per change adds up).
        """
        return (creation_seconds(self), self.name, self.namespace)

    @cached_property
    def model(self) -> Model | None:
        """The spec as its frozen typed model (api.models), None for kinds without one; ModelError if it does not fit.

        Built once per object: the stores build it when the resource enters (validated resources only), so a
        spec that does not fit is refused there; `replace` carries it over while the spec stays the same.
        """
        from sailmesh.api.models import build_model  # api.models imports this module

        return build_model(self)

    def replace(self, **changes: Any) -> Resource:
        """A copy with `changes` (dataclasses.replace) that keeps the built model when kind and spec are the same."""
        new = dataclasses.replace(self, **changes)
        built = self.__dict__.get("model", _UNBUILT)
        if built is not _UNBUILT and new.kind == self.kind and new.spec is self.spec:
            new.__dict__["model"] = built
        return new

    def __str__(self) -> str:
        return str(self.key)


_UNBUILT = object()


def creation_timestamp(resource: Resource) -> str:
    """metadata.creationTimestamp as written or assigned by the store ("" if none)."""
    meta = resource.raw.get("metadata") if isinstance(resource.raw, dict) else None
    ts = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    if isinstance(ts, dt.datetime):  # YAML parses unquoted timestamps
        return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(ts) if ts else ""


def creation_seconds(resource: Resource) -> float:
    """creationTimestamp as seconds since the epoch; resources without one sort last."""
    ts = creation_timestamp(resource)
    if not ts:
        return float("inf")
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")
