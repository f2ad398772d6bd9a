"""MeshSource: the ADS server's ResourceSource, backed by the current snapshot and the Generator."""

from __future__ import annotations

import logging
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from sailmesh.generate.generator import Generator
from sailmesh.server.source import Generated
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.snapshot.node import proxy_view_from_node
from sailmesh.xds.logtext import printable
from sailmesh.xds.push import PushRequest

log = logging.getLogger(__name__)


class MeshSource:
    """Serves every connected proxy from one immutable snapshot; update() swaps in the next one."""

    def __init__(self, snapshot: MeshSnapshot, generator: Generator | None = None) -> None:
        self.snapshot = snapshot
        self.generator = generator or Generator()
        self.generator.advance(snapshot, None)
        self.proxies: dict[int, ProxyView] = {}

    def update(self, snapshot: MeshSnapshot, request: PushRequest | None) -> None:
        """Move to snapshot; `request` says which types changed (None: nothing to push, no type changed)."""
        self.generator.advance(snapshot, frozenset() if request is None else request.type_urls)
        self.snapshot = snapshot

    def proxy_connected(self, node: base_pb2.Node) -> object:
        metadata: dict[str, Any] = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        view = proxy_view_from_node(node.id, metadata)  # raises XdsError for a malformed node
        self.proxies[id(view)] = view
        log.debug("proxy connected: %s", printable(view.id))  # the ADS server logs it at info (once, not twice)
        return view

    def proxy_disconnected(self, handle: object) -> None:
        if isinstance(handle, ProxyView):
            self.proxies.pop(id(handle), None)
            log.debug("proxy disconnected: %s", printable(handle.id))

    def generate(self, handle: object, type_url: str, names: frozenset[str] | None = None) -> Generated:
        """Raises GenerationError; the server then keeps the proxy's last config and reports the error."""
        assert isinstance(handle, ProxyView)
        return Generated(parts=self.generator.generate(self.snapshot, handle, type_url, names))

    def version(self) -> str:
        return str(self.snapshot.version)
