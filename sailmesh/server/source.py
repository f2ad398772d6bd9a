"""The contract between the ADS server and whatever produces resources for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from envoy.config.core.v3 import base_pb2
from google.protobuf.any_pb2 import Any as AnyProto


class Generated:
    """The resources of one type for one proxy. Each resource is a packed Any, keyed by its name.

    A source may hand them over in parts (disjoint name sets): proxies of a scope share their large outbound
    part and differ in a small own part, and the server hashes and encodes each part once instead of a merged
    copy per proxy. Treat every mapping and its Anys as immutable: the server caches hashes by object
    identity, so a change must come as a new mapping (and new Anys).
    """

    __slots__ = ("_merged", "parts")

    def __init__(self, resources: Mapping[str, AnyProto] | None = None,
                 parts: tuple[Mapping[str, AnyProto], ...] = ()) -> None:
        self.parts: tuple[Mapping[str, AnyProto], ...] = (resources,) if resources is not None else parts
        self._merged: Mapping[str, AnyProto] | None = resources

    @property
    def resources(self) -> Mapping[str, AnyProto]:
        """Every resource in one mapping (merged on first use when given in parts)."""
        if self._merged is None:
            if len(self.parts) == 1:
                self._merged = self.parts[0]
            else:
                merged: dict[str, AnyProto] = {}
                for part in self.parts:
                    merged.update(part)
                self._merged = merged
        return self._merged


class ResourceSource(Protocol):
    """Produces resources for a connected proxy. Implemented by the control plane (generate + snapshot)."""

    def proxy_connected(self, node: base_pb2.Node) -> object:
        """Validate and remember a new proxy; returns an opaque proxy handle, raises XdsError to refuse."""
        ...

    def proxy_disconnected(self, handle: object) -> None:
        """Forget a proxy."""
        ...

    def generate(self, handle: object, type_url: str, names: frozenset[str] | None = None) -> Generated:
        """Every resource of type_url for this proxy at the current snapshot (the server filters names).
        `names`: the proxy subscribed to these only (None: wildcard); a source may leave out parts that hold
        none of them."""
        ...

    def version(self) -> str:
        """The current snapshot version (the server stamps responses with it)."""
        ...
