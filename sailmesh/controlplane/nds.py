"""The name-table stream: each agent with DNS capture gets its proxy's NameTable (Istio's NDS) and every change.

Istio multiplexes NDS into the ADS stream its agent proxies for Envoy. Here Envoy talks ADS to the control plane
itself, so the agent opens its own stream for the one type it needs, on the same ports and credentials as ADS
(15012 mTLS, the node bound to its certificate as for ADS; the plaintext loopback port when enabled):
`/sailmesh.nds.v1.NameTableDiscoveryService/StreamNameTable`, DiscoveryRequest in (the first names the node;
ACKs and NACKs follow), DiscoveryResponse out, one resource of type
`type.googleapis.com/istio.networking.nds.v1.NameTable`, sent again only when the proxy's table changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from sailmesh.errors import XdsError
from sailmesh.generate.nametable import build_name_table
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.snapshot.node import proxy_view_from_node
from sailmesh.xds.nds import NAME_TABLE_TYPE, NDS_METHOD, NDS_SERVICE

log = logging.getLogger("sailmesh.controlplane")

Authorize = Callable[[Any, tuple[str, ...], bool], None]


class NameTableService:
    """Serves NameTables from the current snapshot; `publish()` after each new snapshot."""

    def __init__(self, current: Callable[[], MeshSnapshot | None], authorize: Authorize | None = None) -> None:
        self.current = current
        self.authorize = authorize
        self._waiters: set[asyncio.Event] = set()
        self._nonces = itertools.count(1)
        self.streams = 0

    def publish(self) -> None:
        """A new snapshot: every stream rebuilds its table (and sends it when it changed)."""
        for event in self._waiters:
            event.set()

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic gRPC handler (add it to the ADS server's handlers)."""
        method = grpc.stream_stream_rpc_method_handler(
            self.stream, request_deserializer=_parse_request,
            response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString)
        return grpc.method_handlers_generic_handler(NDS_SERVICE, {NDS_METHOD: method})

    async def stream(self, requests: AsyncIterator[Any], context: Any) -> None:
        """One agent's stream. Requests are read with context.read() and responses written with context.write(),
        and the stream keeps only the digest of the table it sent: grpc.aio's request iterator holds the last
        request it yielded until the next one comes, and its loop over a handler's yielded responses the last
        response until the next is yielded; the table, its bytes and the response were all held by every stream
        between changes (as the ADS server held each proxy's last request before session 12)."""
        first: Any = await context.read()
        if first is grpc.aio.EOF:
            return
        node = first.node
        del first
        if not node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        identities = tuple(i.decode(errors="replace") for i in (context.peer_identities() or ()))
        secure = b"ssl" in (context.auth_context().get("transport_security_type") or ())
        try:
            if self.authorize is not None:
                self.authorize(node, identities, secure)
            meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
            proxy = proxy_view_from_node(node.id, meta)
        except XdsError as e:
            log.warning("refused the name-table stream of %s: %s", node.id[:200], e)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"proxy {node.id[:200]} refused: {e}")
            return
        changed, ended = asyncio.Event(), asyncio.Event()
        self._waiters.add(changed)
        reader = asyncio.create_task(self._read(context, node.id, ended, changed))
        self.streams += 1
        sent = b""  # the digest of the last table sent
        try:
            while not ended.is_set():
                changed.clear()
                sent = await self._send_changed(context, proxy, sent)
                await changed.wait()
        finally:
            self.streams -= 1
            self._waiters.discard(changed)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _send_changed(self, context: Any, proxy: ProxyView, sent: bytes) -> bytes:
        """Write the proxy's table if its digest is not `sent`; returns the digest of the table the agent has."""
        snapshot = self.current()
        if snapshot is None:
            return sent
        body = build_name_table(snapshot, proxy).SerializeToString(deterministic=True)
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest != sent:
            response = discovery_pb2.DiscoveryResponse(version_info=str(snapshot.version), type_url=NAME_TABLE_TYPE,
                                                       nonce=str(next(self._nonces)))
            response.resources.add(type_url=NAME_TABLE_TYPE, value=body)
            await context.write(response)
        return digest

    @staticmethod
    async def _read(context: Any, node_id: str, ended: asyncio.Event, changed: asyncio.Event) -> None:
        """ACKs and NACKs (a NACK is logged: the agent keeps its last table); the end of the stream ends it."""
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                if request.HasField("error_detail"):
                    log.warning("proxy %s rejected name table %s: %s", node_id[:200], request.response_nonce,
                                request.error_detail.message[:500])
                del request  # not held while waiting for the next one
        except (grpc.aio.AioRpcError, grpc.RpcError, asyncio.CancelledError, asyncio.InvalidStateError):
            pass
        finally:
            ended.set()
            changed.set()


def _parse_request(data: bytes) -> discovery_pb2.DiscoveryRequest:
    """The stream's request deserializer."""
    return discovery_pb2.DiscoveryRequest.FromString(data)
