"""The ADS gRPC server: StreamAggregatedResources (SotW) and DeltaAggregatedResources on grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message

from sailmesh.errors import XdsError
from sailmesh.server.budget import SendBudget
from sailmesh.server.connection import Connection, ConnectionStatus
from sailmesh.server.delta import DeltaConnection
from sailmesh.server.hashing import HashCache
from sailmesh.server.limits import MAX_REQUEST_BYTES, Limits, RequestRefused
from sailmesh.server.metrics import XdsMetrics
from sailmesh.server.sotw import SotwConnection
from sailmesh.server.source import ResourceSource
from sailmesh.server.throttle import PushSlots, StreamRate
from sailmesh.xds.logtext import printable
from sailmesh.xds.push import PushRequest

log = logging.getLogger("sailmesh.server")

# gRPC core queues an incoming call until the grpc.aio serving loop asks for it (one at a time); past
# 1,000 queued calls it cancels new ones at random (all past 3,000), which a reconnect storm of a few
# thousand proxies reaches. Envoy would retry with backoff, but there is no reason to shed them: queue them.
# A queued call is also cancelled after grpc.server_max_unrequested_time_in_server (30 s), which a loop busy
# with the first push to 2,000 proxies reaches; a retry would only go to the back of the queue: wait longer.
MAX_PENDING_CALLS = 100_000
MAX_UNREQUESTED_S = 300

# What one connection may keep as its read buffer between reads. gRPC's TCP endpoint sizes its next read by the
# largest burst it has read (doubling up to it, then shrinking by 1 % a read) and keeps the unused part for the
# next read: after an unscoped EDS ACK (every cluster's name: 1 MB at 5,000 services) each connection kept ~1 MB of
# 64 KiB read slices for as long as it lived. At 2,000 services / 200 proxies these slices were 60-86 MB of the
# control plane's live heap (heaptrack: 965-1,379 of them, 5-7 per connection); bounded, one per connection.
# Large requests are still read whole, in more reads.
MAX_READ_BUFFER_BYTES = 64 * 1024

# Generous message limits: a proxy in a large mesh gets many megabytes of clusters (its requests are small).
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Envoy pings its xDS connection every 30 s (the bootstrap's connection_keepalive); gRPC's default policy
    # allows a client one ping per 5 min on a stream without data and answers the third early one with GOAWAY
    # too_many_pings: every proxy reconnected every ~2 min and was sent its whole config again. Istio's
    # istiod allows a ping every 15 s, with or without a stream (keepalive.EnforcementPolicy MinTime 15 s,
    # PermitWithoutStream true).
    ("grpc.http2.min_ping_interval_without_data_ms", 15_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS // 2),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
    ("grpc.server_max_unrequested_time_in_server", MAX_UNREQUESTED_S),
    ("grpc.experimental.tcp_max_read_buffer_size", MAX_READ_BUFFER_BYTES),
]

# gRPC sets SO_REUSEPORT on its listeners by default: a second control plane would then share the port silently
# and reconnecting proxies could reach either. Every grpc.aio server sailmesh creates passes this option, so a
# taken port fails to bind.
NO_PORT_REUSE = ("grpc.so_reuseport", 0)

# A response write blocked this long (the proxy does not read) ends the stream with DEADLINE_EXCEEDED, counted in
# pilot_xds_write_timeout: Istio's PILOT_XDS_SEND_TIMEOUT and its status. The proxy reconnects and is sent its
# config again; meanwhile its blocked bytes left the shared send budget after budget.STALL_S.
WRITE_TIMEOUT_S = 30.0
# How long a stream being ended waits for its status to go out before the call is cancelled.
STATUS_GRACE_S = 1.0


class WriteTimeoutError(XdsError):
    """A response write did not complete within the server's write timeout."""


# A stream's context: requests are messages, responses messages or pre-serialized bytes (see _serialize).
Context: TypeAlias = grpc.aio.ServicerContext[Message, Message | bytes]


def _serialize(response: Message | bytes) -> bytes:
    """Responses may come pre-serialized (SotW builds them from cached resource bytes)."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def _sotw_request(data: bytes) -> bytes:
    """A SotW request is read as its bytes and parsed only when needed: an ACK that repeats the last verified
    subscription byte for byte is taken without parsing it (SotwConnection.try_ack_bytes)."""
    return data


def _register(servicer: ads_pb2_grpc.AggregatedDiscoveryServiceServicer, server: grpc.aio.Server) -> None:
    """ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server with a pass-through response serializer
    (and SotW requests that keep their bytes)."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources, request_deserializer=_sotw_request,
            response_serializer=_serialize),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize),
    }
    service = "envoy.service.discovery.v3.AggregatedDiscoveryService"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def _listen(server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address,
                                                                                                   credentials)
    except RuntimeError as e:
        raise XdsError(f"cannot listen on {address}: {e}") from e
    if not bound:
        raise XdsError(f"cannot listen on {address}")
    return bound


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]  # base has no stubs
    """Serves one ResourceSource to every connected proxy; push() fans a change out to their queues."""

    def __init__(self, source: ResourceSource, metrics: XdsMetrics | None = None, *,
                 write_timeout: float = WRITE_TIMEOUT_S, budget: SendBudget | None = None,
                 limits: Limits | None = None, push_throttle: int = 0, streams_per_s: float = 0.0,
                 stream_burst: int = 1) -> None:
        self.source = source
        self.metrics = metrics or XdsMetrics()
        # Istio's PILOT_PUSH_THROTTLE (connections sending a push at once) and PILOT_MAX_REQUESTS_PER_SECOND (new
        # streams admitted per second); 0: no limit
        self.slots = PushSlots(push_throttle)
        self.slots.on_grant = lambda waited: self.metrics.queue_time.observe(waited)
        self.stream_rate = StreamRate(streams_per_s, stream_burst)
        self._rate_logged = 0.0
        self._connections: dict[str, Connection] = {}
        self.hashes = HashCache()
        self.budget = budget or SendBudget()  # bytes of responses built and not yet sent, across all connections
        self.write_timeout = write_timeout
        self.limits = limits or Limits()
        self._ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.also_ports: list[int] = []
        # Called with (node, the client certificate's identities, whether the stream is TLS) before a stream is
        # served; raising XdsError refuses it with PERMISSION_DENIED. The control plane binds node to certificate.
        self.authorize: Callable[[Any, tuple[str, ...], bool], None] | None = None
        self.host = ""

    # -- lifecycle --
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, credentials: grpc.ServerCredentials | None = None, *,
        handlers: Sequence[grpc.GenericRpcHandler] = (),
        also: Sequence[tuple[str, int, grpc.ServerCredentials | None]] = (),
    ) -> int:
        """Start listening (loopback by default, plaintext unless credentials are given); returns the bound port.

        `handlers` are other gRPC services on the same server (the CA's certificate service); `also` are more
        (host, port, credentials) to listen on, whose bound ports land in `also_ports`.
        """
        if self._server is not None:
            raise XdsError("the ADS server is already serving")
        server = grpc.aio.server(options=[*SERVER_OPTIONS, NO_PORT_REUSE])
        _register(self, server)
        if handlers:
            server.add_generic_rpc_handlers(tuple(handlers))
        bound = _listen(server, host, port, credentials)
        self.also_ports = [_listen(server, h, p, c) for h, p, c in also]
        await server.start()
        self._server, self.host, self.port = server, host, bound
        log.info("ADS listening on %s:%d (%s)", host, bound, "TLS" if credentials else "plaintext")
        for (h, _, c), p in zip(also, self.also_ports, strict=True):
            log.info("ADS also listening on %s:%d (%s)", h, p, "TLS" if c else "plaintext")
        return bound

    async def stop(self, grace: float | None = 0.0) -> None:
        """Stop listening and end every stream (proxies keep their config and reconnect elsewhere/later)."""
        server, self._server = self._server, None
        for conn in list(self._connections.values()):
            conn.close()
        if server is not None:
            await server.stop(grace)

    # -- pushes and introspection --
    def push(self, request: PushRequest) -> int:
        """Queue a push to every connection (or those whose node id is listed); returns how many were queued."""
        now = time.monotonic()
        queued = 0
        for conn in self._connections.values():
            if request.proxies is None or conn.node_id in request.proxies:
                conn.enqueue_push(request, now)
                queued += 1
        return queued

    def connections(self) -> list[ConnectionStatus]:
        """A snapshot of every connection's state, for proxy-status and the dashboard."""
        return [conn.status() for conn in self._connections.values()]

    def connection_count(self) -> int:
        return len(self._connections)

    # -- the two RPCs --
    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[tuple[discovery_pb2.DiscoveryRequest, bytes]], context: Context
    ) -> None:
        await self._serve_stream(context, delta=False)  # requests: context.read() (see _serve_stream)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: Context
    ) -> None:
        await self._serve_stream(context, delta=True)

    async def _serve_stream(self, context: Context, *, delta: bool) -> None:
        if not await self.stream_rate.admit():
            self._rate_limited(context.peer())
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request rate limit exceeded")
        # Requests are read with context.read(), never through request_iterator: grpc.aio's iterator holds the last
        # request it yielded while it waits for the next, and so did this server's reading loop (one unscoped EDS
        # ACK names every cluster: 0.2 MB at 1,000 services, 1 MB at 5,000, per connection, parsed and as bytes).
        first: Any = await context.read()  # a SotW request comes as its bytes (_sotw_request)
        if first is grpc.aio.EOF:
            return
        if not delta:
            first = discovery_pb2.DiscoveryRequest.FromString(first)
        node = first.node
        if not node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        try:
            self.limits.check_node(first)
            self.limits.check_request(first)
        except RequestRefused as e:
            log.warning("refused a stream from %s: %s", context.peer(), e)
            await context.abort(grpc.StatusCode[e.code], str(e))
        shown = printable(node.id)
        identities = tuple(i.decode(errors="replace") for i in (context.peer_identities() or ()))
        if self.authorize is not None:
            secure = b"ssl" in (context.auth_context().get("transport_security_type") or ())
            try:
                self.authorize(node, identities, secure)
            except XdsError as e:
                log.warning("refused proxy %s from %s: %s", shown, context.peer(), printable(e, 1000))
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"proxy {shown} refused: {e}")
        try:
            handle = self.source.proxy_connected(node)
        except XdsError as e:
            log.warning("refused proxy %s: %s", shown, printable(e, 1000))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"proxy {shown} refused: {e}")
        conn_id = f"{node.id}-{next(self._ids)}"
        cls = DeltaConnection if delta else SotwConnection
        conn = cls(conn_id, node, handle, self.source, self.metrics, self.hashes, self.budget, self.limits,
                   self.slots)
        conn.peer = context.peer()
        conn.identities = identities
        self._connections[conn_id] = conn
        self.metrics.connected.inc()
        log.info("proxy %s connected (%s, %s)", shown, printable(conn_id), "delta" if delta else "sotw")
        conn.enqueue_request(first)
        del first
        reader = asyncio.create_task(self._read(context, conn, delta=delta))
        ending: tuple[grpc.StatusCode, str] | None = None
        try:
            await conn.run(self._writer(context))
            if conn.refused is not None:
                raise conn.refused
        except RequestRefused as e:
            log.warning("ending the stream of proxy %s: %s", shown, e)
            ending = (grpc.StatusCode[e.code], str(e))
        except WriteTimeoutError as e:
            self.metrics.write_timeouts.inc()
            log.warning("ending the stream of proxy %s (%s): %s", shown, conn.peer, e)
            ending = (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout sending")
        finally:
            conn.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._connections.pop(conn_id, None)
            self.metrics.connected.dec()
            self.source.proxy_disconnected(handle)
            log.info("proxy %s disconnected (%s)", shown, printable(conn_id))
        if ending is not None:
            try:
                async with asyncio.timeout(STATUS_GRACE_S):
                    await context.abort(*ending)
            except TimeoutError:
                # The status waits behind the unread responses: cancel the call instead (gRPC resets the stream
                # and frees its buffers; the proxy sees CANCELLED when it reads again).
                raise asyncio.CancelledError() from None

    def _rate_limited(self, peer: str) -> None:
        """Count a refused stream; warn at most every 10 s (a storm refuses hundreds)."""
        self.metrics.rate_limited.inc()
        now = time.monotonic()
        if now - self._rate_logged >= 10.0:
            self._rate_logged = now
            log.warning("refused a new stream from %s: request rate limit exceeded (%g per second; %d refused so "
                        "far), it reconnects with back-off", printable(peer), self.stream_rate.rate,
                        self.stream_rate.refused)

    def _writer(self, context: Context) -> Callable[[Message | bytes], Awaitable[None]]:
        """context.write, bounded by the write timeout (raises WriteTimeoutError)."""
        timeout = self.write_timeout
        if timeout <= 0:
            return context.write

        async def write(response: Message | bytes) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await context.write(response)
            except TimeoutError:
                raise WriteTimeoutError(f"a response write blocked for {timeout:g}s (the proxy does not read)") \
                    from None

        return write

    def _take(self, conn: Connection, item: Any, delta: bool) -> None:
        """One request read from the stream: recorded (an ACK) or queued for the connection's loop."""
        if delta:
            conn.receive(item, self.limits.check_request(item))
            return
        if conn.try_ack_bytes(item):
            return  # the ACK of a current response repeating the subscription byte for byte: nothing else to check
        request = discovery_pb2.DiscoveryRequest.FromString(item)
        conn.receive(request, self.limits.check_request(request), item)

    async def _read(self, context: Context, conn: Connection, *, delta: bool = False) -> None:
        try:
            while True:
                item: Any = await context.read()
                if item is grpc.aio.EOF:
                    return
                self._take(conn, item, delta)
                del item  # not held while waiting for the next request (see _serve_stream)
                if conn.queued_requests >= self.limits.queued_requests:
                    await conn.room()
        except RequestRefused as e:
            conn.refuse(e)
        except (grpc.RpcError, asyncio.InvalidStateError) as e:
            log.debug("stream %s ended: %s", conn.conn_id, e)
        finally:
            conn.close()
