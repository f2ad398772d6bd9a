"""What one xDS client may ask for: bounds on request fields, so no client's input grows the server's memory.

A request over a bound ends the stream with a gRPC status saying which bound (INVALID_ARGUMENT for a malformed
node, RESOURCE_EXHAUSTED for too many names or types); a NACK's error message is stored cut to a bound. The
limits are far above what Envoy sends for the largest meshes measured here (5,000 services: a few thousand EDS
names per request; Istio node ids are under 300 characters, node metadata a few kB).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from sailmesh.errors import XdsError
from sailmesh.xds.logtext import printable

MAX_NODE_ID = 1024  # characters
MAX_METADATA_BYTES = 256 * 1024  # node.metadata, serialized
MAX_NAMES = 50_000  # resource names in one request, and subscribed per type on a delta stream
MAX_NAME = 2048  # characters of one resource name
MAX_TYPES = 16  # distinct type URLs on one stream (sailmesh serves 5)
MAX_TYPE_URL = 256
MAX_NACK_DETAIL = 4096  # characters of a NACK's error message kept for proxy-status and the log
MAX_QUEUED_REQUESTS = 64  # requests read and not yet served, per stream (then the server stops reading)
MAX_REQUEST_BYTES = 16 * 2**20  # gRPC's receive limit for one request


class RequestRefused(XdsError):
    """A request over a bound: the stream ends with `code` (a grpc.StatusCode name) and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """The bounds in force (a server may be given others, e.g. by a test)."""

    node_id: int = MAX_NODE_ID
    metadata_bytes: int = MAX_METADATA_BYTES
    names: int = MAX_NAMES
    name: int = MAX_NAME
    types: int = MAX_TYPES
    type_url: int = MAX_TYPE_URL
    nack_detail: int = MAX_NACK_DETAIL
    queued_requests: int = MAX_QUEUED_REQUESTS

    def check_node(self, request: Message) -> None:
        """The first request's node: an id of bounded length, metadata of bounded size."""
        node = request.node  # type: ignore[attr-defined]
        if len(node.id) > self.node_id:
            raise RequestRefused("INVALID_ARGUMENT", f"node.id has {len(node.id)} characters, over {self.node_id}")
        if node.HasField("metadata"):
            size = node.metadata.ByteSize()
            if size > self.metadata_bytes:
                raise RequestRefused("INVALID_ARGUMENT",
                                     f"node.metadata has {size} bytes, over {self.metadata_bytes}")

    def check_request(self, request: Message) -> list[str] | None:
        """Any request (SotW or delta): bounded type URL and names; raises RequestRefused. Returns a SotW request's
        resource names as a list (each access to the protobuf's repeated field makes new str objects: an ACK of
        3,500 EDS names is read once, not once per check), None for a delta request."""
        type_url: str = request.type_url  # type: ignore[attr-defined]
        if len(type_url) > self.type_url:
            raise RequestRefused("INVALID_ARGUMENT",
                                 f"type_url has {len(type_url)} characters, over {self.type_url}")
        if isinstance(request, discovery_pb2.DiscoveryRequest):
            self._check_names(type_url, request.resource_names)
            names = list(request.resource_names)
            self._check_lengths(names)
            return names
        assert isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
        for field in (request.resource_names_subscribe, request.resource_names_unsubscribe,
                      request.initial_resource_versions):
            self._check_names(type_url, field)
            self._check_lengths(field)
        return None

    def _check_names(self, type_url: str, names: Collection[str]) -> None:
        if len(names) > self.names:
            raise RequestRefused("RESOURCE_EXHAUSTED", f"{len(names)} resource names for "
                                 f"{printable(type_url)} in one request, over {self.names}")

    def _check_lengths(self, names: Collection[str]) -> None:
        longest = max(map(len, names)) if names else 0
        if longest > self.name:
            raise RequestRefused("INVALID_ARGUMENT", f"a resource name of {longest} characters, over {self.name}")

    def check_types(self, count: int) -> None:
        if count > self.types:
            raise RequestRefused("RESOURCE_EXHAUSTED", f"{count} type URLs on one stream, over {self.types}")

    def check_subscribed(self, type_url: str, count: int) -> None:
        if count > self.names:
            raise RequestRefused("RESOURCE_EXHAUSTED", f"{count} names subscribed for {printable(type_url)}, "
                                 f"over {self.names}")

    def nack_text(self, detail: str) -> str:
        """A NACK's message as stored: cut to the bound, saying how long it was."""
        if len(detail) <= self.nack_detail:
            return detail
        return f"{detail[:self.nack_detail]}... ({len(detail)} characters, cut)"
