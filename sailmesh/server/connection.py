"""One proxy's ADS stream: per-type watch state, its own push queue, and the loop that serves both."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from sailmesh.errors import GenerationError, UnservedTypeError
from sailmesh.server.budget import SendBudget
from sailmesh.server.hashing import HashCache
from sailmesh.server.limits import Limits, RequestRefused
from sailmesh.server.metrics import XdsMetrics, type_label
from sailmesh.server.push import PendingPush, ordered
from sailmesh.server.source import Generated, ResourceSource
from sailmesh.server.throttle import PushSlots
from sailmesh.xds.logtext import printable
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, short_name

log = logging.getLogger("sailmesh.server")

# A response message, or an already serialized one (the server's serializer passes bytes through).
Send = Callable[[Message | bytes], Awaitable[None]]

# How long a push waits for the proxy to ACK clusters before sending the listeners and routes using them.
CLUSTER_ACK_TIMEOUT_S = 5.0


@dataclass
class WatchState:
    """What one connection subscribed to for one type, and what was sent, ACKed and NACKed."""

    type_url: str
    wildcard: bool = False
    names: set[str] | frozenset[str] = field(default_factory=set)  # delta edits a set; SotW keeps a canonical frozenset
    sent_version: str = ""
    base_version: str = ""  # the source version the last response was stamped from
    sent_nonce: str = ""
    sent_digest: bytes = b""
    sent_at: float = 0.0
    sent_count: int = 0  # responses sent
    resource_count: int = 0
    acked_version: str = ""
    acked_nonce: str = ""
    nack_detail: str = ""
    nacked_version: str = ""
    nacked_digest: bytes = b""
    push_started: float | None = None  # earliest unACKed push request time (convergence)
    client_versions: dict[str, str] = field(default_factory=dict)  # delta: what the client holds
    # SotW clusters and endpoints: the parts last sent (the source's shared mappings, referenced, not copied), to
    # tell which resources a push updates
    sent_parts: tuple[Mapping[str, AnyProto], ...] = ()
    # SotW endpoints: the parts and the subscription the last response was built from (sotw.py: an endpoint push
    # sends only the assignments it updates)
    sent_names: frozenset[str] | None = None
    # SotW: the names part of the last ACK's bytes that was found to keep the subscription (sotw.py try_ack_bytes)
    names_bytes: bytes | None = None
    # SotW: the bytes of an ACK of the last response before and after its names (sotw.py try_ack_bytes)
    ack_head: bytes = b""
    ack_tail: bytes = b""


@dataclass(frozen=True)
class TypeStatus:
    """One type of one connection, for proxy-status."""

    type_url: str
    short: str
    wildcard: bool
    names: tuple[str, ...]
    sent_version: str
    sent_nonce: str
    acked_version: str
    nack_detail: str
    nacked_version: str
    resource_count: int
    responses: int
    synced: bool  # the last response sent was ACKed
    error: str = ""  # generating this type failed: the proxy keeps the last config sent

    @property
    def state(self) -> str:
        """istioctl proxy-status's column: SYNCED, NOT SENT, or STALE (sent but not ACKed, or NACKed, or the
        control plane failed to generate the current config)."""
        if self.error:
            return "STALE"
        if not self.sent_nonce:
            return "NOT SENT"
        return "SYNCED" if self.synced else "STALE"


@dataclass(frozen=True)
class ConnectionStatus:
    """One connected proxy, for proxy-status."""

    conn_id: str
    node_id: str
    cluster: str
    connected_at: float  # wall clock (time.time())
    delta: bool
    types: dict[str, TypeStatus]
    pushes: int
    awaiting_ack: str  # short type name the current push waits for ("cds"), or ""
    peer: str = ""  # gRPC peer address, e.g. ipv4:127.0.0.1:41234
    identities: tuple[str, ...] = ()  # TLS peer identities (client certificate SANs), empty on plaintext
    queued_requests: int = 0  # requests read and not yet served (bounded by Limits.queued_requests)
    # the source version this connection had caught up with when it last had nothing to send (every push and
    # request up to it served): with every type ACKed, the proxy holds that version's config (distribution.py)
    idle_version: str = ""


class Wakeup:
    """asyncio.Event for a single waiter, without Event.wait()'s per-call loop check (a getpid() system call):
    each proxy's loop waits once per request and per push, thousands of times per push."""

    __slots__ = ("_flag", "_fut")

    def __init__(self) -> None:
        self._flag = False
        self._fut: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        self._fut = asyncio.get_running_loop().create_future()
        try:
            await self._fut
        finally:
            self._fut = None


class Connection:
    """Base of the SotW and delta connections: request queue + merged push queue served by one coroutine."""

    delta = False

    def __init__(
        self,
        conn_id: str,
        node: base_pb2.Node,
        handle: object,
        source: ResourceSource,
        metrics: XdsMetrics,
        hashes: HashCache | None = None,
        budget: SendBudget | None = None,
        limits: Limits | None = None,
        slots: PushSlots | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.node = node
        self.node_id = node.id
        self.log_id = printable(node.id)  # the node id as logged (client-supplied: escaped)
        self.limits = limits or Limits()
        self.refused: RequestRefused | None = None  # why the stream is being ended by the server
        self.handle = handle
        self.source = source
        self.metrics = metrics
        self.hashes = hashes or HashCache()
        self.budget = budget or SendBudget()
        self.slots = slots or PushSlots()  # the push throttle shared by every connection
        self.connected_at = time.time()
        self.peer = ""
        self.identities: tuple[str, ...] = ()
        self.types: dict[str, WatchState] = {}
        self.errors: dict[str, str] = {}  # type URL -> why generating it failed (the proxy keeps its last config)
        self.pushes = 0
        self._requests: deque[Message] = deque()
        self._room = asyncio.Event()  # set when the request queue is below the limit (the reader may read on)
        self._room.set()
        self._pending: PendingPush | None = None
        self._wake = Wakeup()
        self._closed = False
        self._awaiting: str | None = None  # a type whose ACK the current push waits for
        self._await_deadline = 0.0
        # The last clusters sent updated a cluster the proxy gets endpoints for (or may have: delta, or not known),
        # so the push sends the endpoints after them even when unchanged (see run()).
        self.eds_warming = True
        self._nonce_prefix = secrets.token_hex(4)
        self._nonce_seq = 0
        self.idle_version = ""  # see ConnectionStatus.idle_version

    # -- queueing (called from the reader task and from AdsServer.push; never blocks) --
    def enqueue_request(self, request: Message) -> None:
        self._requests.append(request)
        if len(self._requests) >= self.limits.queued_requests:
            self._room.clear()
        self._wake.set()

    async def room(self) -> None:
        """Wait until the request queue is below its limit: the reader stops reading meanwhile, so gRPC's flow
        control holds back a client that sends faster than its requests are served (its memory stays bounded)."""
        await self._room.wait()

    def _next_request(self) -> Message:
        request = self._requests.popleft()
        if len(self._requests) < self.limits.queued_requests:
            self._room.set()
        return request

    @property
    def queued_requests(self) -> int:
        return len(self._requests)

    def receive(self, request: Message, names: list[str] | None = None, data: bytes | None = None) -> None:
        """A request from the proxy: a plain ACK is recorded at once, anything else queued for the loop. `names`:
        a SotW request's resource names already read (Limits.check_request); `data`: its bytes."""
        if self._requests or not self.try_ack(request, names, data):
            self.enqueue_request(request)

    def try_ack_bytes(self, data: bytes) -> bool:
        """Record the request serialized in `data` if it is, byte for byte, the ACK of a type's current response
        with the names of the last ACK found to keep the subscription (the request is not even parsed); False:
        parse it and handle it as any other request."""
        return False

    def enqueue_push(self, request: PushRequest, now: float) -> None:
        if self._pending is None:
            self._pending = PendingPush.of(request, now)
        else:
            self._pending.merge(request)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self.slots.leave(self)
        self._wake.set()
        self._room.set()

    def refuse(self, error: RequestRefused) -> None:
        """End the stream with error's status (a request over a bound)."""
        if self.refused is None:
            self.refused = error
        self.close()

    def watch(self, type_url: str) -> WatchState:
        """The type's watch state, made on its first request (at most `limits.types` types per stream)."""
        st = self.types.get(type_url)
        if st is None:
            self.limits.check_types(len(self.types) + 1)
            st = self.types[type_url] = WatchState(type_url)
        return st

    @property
    def pending_push(self) -> PendingPush | None:
        return self._pending

    # -- the serving loop --
    async def run(self, send: Send) -> None:
        """Serve requests first, then the merged push type by type, until closed.

        Within a push, after clusters (and their endpoints) are sent the rest of the push waits for the clusters'
        ACK (or NACK, or CLUSTER_ACK_TIMEOUT_S), so listeners and routes never reach the proxy before the clusters
        they use. Requests are still served while waiting; pushes arriving meanwhile merge into the next one.
        Endpoints do not wait for that ACK, and over SotW a push that sends clusters updating a cluster the proxy
        gets endpoints for sends the endpoints after them even when unchanged: Envoy keeps an updated EDS cluster
        warming until an EDS response names it (xDS protocol, "Resource warming") and ACKs the clusters only then,
        while its EDS request for the updated cluster repeats the names it has, which reads as an ACK. Without this
        a DestinationRule or PeerAuthentication change waited for the cluster's initial_fetch_timeout (15 s).
        Istio's full push also sends clusters, then endpoints, without waiting in between. Clusters only added or
        removed change the proxy's EDS names (a subscription change, answered at once), and clusters with the same
        bytes are not updated by Envoy: neither needs the endpoints again (`eds_warming`, set by respond()).

        The push slot (the throttle) is held while a response is generated and while a write that the push
        continues after is under way; the push's last write gives it back as it starts. Waiting for that write to
        complete held the slots of a one-type push (a VirtualService's routes, endpoints) for a gRPC round trip
        each: 500 proxies went through 100 slots in five waves, 130-260 ms of scoped p99 with no storm at all
        (session 8). The bytes of writes under way stay bounded by the send budget (server/budget.py).
        """
        inflight: list[str] = []
        push: PendingPush | None = None
        clusters_sent = False
        while not self._closed:
            if self._requests:
                # handed over, not kept in this frame: handle_request lets go of it before waiting to send
                await self.handle_request(self._next_request(), send)
                continue
            if self._awaiting is not None and time.monotonic() >= self._await_deadline:
                log.warning("%s did not ACK %s in %.0fs, pushing on", self.log_id, short_name(self._awaiting),
                            CLUSTER_ACK_TIMEOUT_S)
                self._awaiting = None
            # A push's responses go out only while this connection holds a push slot (the throttle); without
            # one it is queued, keeps serving requests and is woken when a slot is granted.
            held = self._awaiting is not None and not (inflight and inflight[0] == ENDPOINT)
            if not held and (inflight or self._pending is not None) \
                    and self.slots.claim(self, self._wake.set, front=bool(inflight)):
                if not inflight and self._pending is not None:
                    push, self._pending = self._pending, None
                    self.pushes += 1
                    inflight = [t for t in ordered(self.types)
                                if push.wants(t) or (t == ENDPOINT and not self.delta and push.wants(CLUSTER))]
                    clusters_sent = False
                if inflight and push is not None:
                    type_url = inflight.pop(0)
                    # Mark the wait before sending: the proxy may read (and ACK) the clusters before this
                    # coroutine resumes from the write; an ACK clears the mark, not sending clears it too.
                    holds_back = type_url == CLUSTER and bool(inflight)
                    if holds_back:
                        self._awaiting = CLUSTER
                        self._await_deadline = time.monotonic() + CLUSTER_ACK_TIMEOUT_S
                    began = time.monotonic()
                    # a write blocked past the stall threshold (the proxy does not read) gives the slot back, as it
                    # gives its budget bytes back: a stalled stream must not hold up everyone's pushes
                    stalled = asyncio.get_running_loop().call_later(self.budget.stall_s, self.slots.release, self)
                    try:
                        resend = type_url == ENDPOINT and clusters_sent and self.eds_warming and not self.delta
                        # the push's last response gives its slot back as its write starts (see run())
                        out = send if inflight else self._handing_over(send)
                        sent = await self.respond(self.types[type_url], out, force=resend, started=push.started)
                    finally:
                        stalled.cancel()
                    clusters_sent = clusters_sent or (type_url == CLUSTER and sent)
                    if sent:
                        self.metrics.push_time.observe(time.monotonic() - began, type=type_label(type_url))
                    if holds_back and not sent and self._awaiting == CLUSTER:
                        self._awaiting = None
                    continue
            if not inflight or held:
                self.slots.release(self)  # done sending, or waiting for the clusters' ACK: let another push go
            if not inflight and self._pending is None and not self._requests:
                self.idle_version = self.source.version()  # every push up to the source's version is served
            # Nothing to do until a request, a push or the ACK deadline (no await between check and clear).
            self._wake.clear()
            if self._awaiting is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, self._await_deadline - time.monotonic())):
                        await self._wake.wait()
            else:
                await self._wake.wait()

    def _handing_over(self, send: Send) -> Send:
        """`send` that gives this connection's push slot back as the write starts."""
        async def send_last(response: Message | bytes) -> None:
            self.slots.release(self)
            await send(response)
        return send_last

    def next_nonce(self) -> str:
        self._nonce_seq += 1
        return f"{self._nonce_prefix}-{self._nonce_seq}"

    def next_version(self, st: WatchState) -> str:
        """The version stamped on a response: the source's snapshot version, the first time it is sent for this
        type; `<version>.<n>` after that (a resend, a changed subscription), so no version repeats on a stream."""
        base = self.source.version()
        if base == st.base_version:
            return f"{base}.{st.sent_count + 1}"
        st.base_version = base
        return base

    def generate(self, type_url: str, names: frozenset[str] | None = None) -> Generated | None:
        """The source's resources (`names`: the subscription, None for wildcard), or None when it failed: the
        proxy keeps its last config of this type, the error is logged once (until it changes or clears) and
        shown by proxy-status."""
        try:
            generated = self.source.generate(self.handle, type_url, names)
        except UnservedTypeError:
            # Istio answers nothing for a type it has no generator for; the proxy's initial fetch times out.
            if type_url not in self.errors:
                log.info("%s asked for %s, which is not served: no response", self.log_id, printable(type_url))
                self.errors[type_url] = "resource type not served"
            return None
        except GenerationError as e:
            self.metrics.internal_errors.inc()
            text = str(e)
            if self.errors.get(type_url) != text:
                log.warning("generating %s for %s failed, keeping the last config: %s",
                            printable(short_name(type_url)), self.log_id, printable(text, 2000))
                self.errors[type_url] = text
            return None
        if type_url in self.errors:
            del self.errors[type_url]
            log.info("generating %s for %s works again", printable(short_name(type_url)), self.log_id)
        return generated

    def on_ack(self, st: WatchState, version: str, nonce: str) -> None:
        """The proxy answered the current nonce without an error: it holds `version`."""
        if st.type_url == self._awaiting:
            self._awaiting = None
            self._wake.set()  # the held-back rest of the push may go on
        st.acked_version = version
        st.acked_nonce = nonce
        if version != st.sent_version:
            return  # a later request after a NACK: the proxy still runs its older config
        st.nack_detail = ""
        if st.push_started is not None:
            self.metrics.convergence.observe(time.monotonic() - st.push_started, type=type_label(st.type_url))
            st.push_started = None

    def on_nack(self, st: WatchState, detail: str) -> None:
        if st.type_url == self._awaiting:
            self._awaiting = None
        st.nack_detail = self.limits.nack_text(detail)
        st.nacked_version = st.sent_version
        st.nacked_digest = st.sent_digest
        st.push_started = None
        self.metrics.rejects.inc(type=type_label(st.type_url))
        log.warning("%s rejected %s version %s: %s", self.log_id, printable(short_name(st.type_url)),
                    st.sent_version, printable(detail, 500))

    def mark_sent(self, st: WatchState, version: str, nonce: str, count: int, started: float | None) -> None:
        st.sent_version = version
        st.sent_nonce = nonce
        st.sent_at = time.monotonic()
        st.sent_count += 1
        st.resource_count = count
        if started is not None and st.push_started is None:
            st.push_started = started
        self.metrics.pushes.inc(type=type_label(st.type_url))

    # -- protocol specific --
    def try_ack(self, request: Message, names: list[str] | None = None, data: bytes | None = None) -> bool:
        """Record `request` if it only ACKs the current response (nothing to send); False: the loop handles it.
        `names`: a SotW request's resource names, if already read; `data`: its bytes, if kept."""
        return False

    async def handle_request(self, request: Message, send: Send) -> None:
        raise NotImplementedError

    async def respond(self, st: WatchState, send: Send, *, force: bool, started: float | None) -> bool:
        """Send this type if needed; True if a response was sent."""
        raise NotImplementedError

    def status(self) -> ConnectionStatus:
        types = {
            t: TypeStatus(
                type_url=t,
                short=short_name(t),
                wildcard=st.wildcard,
                names=tuple(sorted(st.names)),
                sent_version=st.sent_version,
                sent_nonce=st.sent_nonce,
                acked_version=st.acked_version,
                nack_detail=st.nack_detail,
                nacked_version=st.nacked_version,
                resource_count=st.resource_count,
                responses=st.sent_count,
                synced=bool(st.sent_nonce) and st.acked_nonce == st.sent_nonce and st.acked_version == st.sent_version,
                error=self.errors.get(t, ""),
            )
            for t, st in self.types.items()
        }
        return ConnectionStatus(self.conn_id, self.node_id, self.node.cluster, self.connected_at, self.delta, types,
                                self.pushes, short_name(self._awaiting) if self._awaiting else "", self.peer,
                                self.identities, len(self._requests), self.idle_version)
