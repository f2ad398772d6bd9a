"""A ResourceSource that serves resources set by hand (tests, benchmarks, debugging the server alone)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from envoy.config.core.v3 import base_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from sailmesh.errors import XdsError
from sailmesh.server.source import Generated


def pack(message: Message) -> AnyProto:
    """Pack a resource message into an Any."""
    anyp = AnyProto()
    anyp.Pack(message)
    return anyp


class StaticSource:
    """Serves the same resources to every proxy; set() replaces one type's resources and bumps the version."""

    def __init__(self, refuse: Callable[[base_pb2.Node], str | None] | None = None) -> None:
        self._resources: dict[str, Mapping[str, AnyProto]] = {}
        self._version = 0
        self.refuse = refuse
        self.connected: dict[str, base_pb2.Node] = {}
        self.generated = 0  # generate() calls, for tests of caching and skipping

    def set(self, type_url: str, resources: Mapping[str, Message | AnyProto]) -> str:
        packed = {n: r if isinstance(r, AnyProto) else pack(r) for n, r in resources.items()}
        self._resources[type_url] = MappingProxyType(packed)
        self._version += 1
        return self.version()

    def bump(self) -> str:
        """A new version with unchanged resources (a push that changes nothing)."""
        self._version += 1
        return self.version()

    def proxy_connected(self, node: base_pb2.Node) -> object:
        reason = self.refuse(node) if self.refuse else None
        if reason:
            raise XdsError(reason)
        self.connected[node.id] = node
        return node.id

    def proxy_disconnected(self, handle: object) -> None:
        self.connected.pop(str(handle), None)

    def generate(self, handle: object, type_url: str, names: frozenset[str] | None = None) -> Generated:
        self.generated += 1
        return Generated(self._resources.get(type_url, MappingProxyType({})))

    def version(self) -> str:
        return f"v{self._version}"
