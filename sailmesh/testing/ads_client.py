"""A light asyncio ADS client that behaves like Envoy (SotW or delta): wildcard CDS+LDS, then EDS/RDS by name."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from google.rpc import status_pb2

from sailmesh.errors import XdsError
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, WILDCARD_TYPES

_MESSAGES = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}
_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

# nack(type_url, resources by name) -> an error message to reject the response, or None to accept it.
NackPolicy = Callable[[str, Mapping[str, AnyProto]], str | None]


def unpack(anyp: AnyProto) -> object:
    """The resource message inside a packed Any (for the xDS types this client knows)."""
    cls = _MESSAGES.get(anyp.type_url)
    if cls is None:
        raise XdsError(f"unknown resource type {anyp.type_url}")
    msg = cls()
    anyp.Unpack(msg)
    return msg


def _references(msg: object) -> frozenset[str]:
    """Names a resource makes Envoy subscribe to: EDS names of a cluster, RDS names of a listener."""
    if isinstance(msg, cluster_pb2.Cluster):
        if msg.WhichOneof("cluster_discovery_type") == "type" and msg.type == cluster_pb2.Cluster.EDS:
            return frozenset({msg.eds_cluster_config.service_name or msg.name})
        return frozenset()
    if isinstance(msg, listener_pb2.Listener):
        names: set[str] = set()
        chains = list(msg.filter_chains)
        if msg.HasField("default_filter_chain"):
            chains.append(msg.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.typed_config.type_url == _HCM_TYPE:
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
        return frozenset(names)
    return frozenset()


# (type_url, bytes) -> (name, referenced names): thousands of simulated proxies get the same bytes; parse once.
_PARSED: dict[tuple[str, bytes], tuple[str, frozenset[str]]] = {}
_PARSED_MAX = 100_000


def describe(anyp: AnyProto) -> tuple[str, frozenset[str]]:
    """A resource's name and the EDS/RDS names it references (cached by content)."""
    key = (anyp.type_url, anyp.value)
    hit = _PARSED.get(key)
    if hit is None:
        msg = unpack(anyp)
        name = msg.cluster_name if isinstance(msg, endpoint_pb2.ClusterLoadAssignment) else msg.name  # type: ignore[attr-defined]
        hit = (name, _references(msg))
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = hit
    return hit


def resource_name(anyp: AnyProto) -> str:
    return describe(anyp)[0]


def eds_names(clusters: Iterable[AnyProto]) -> set[str]:
    """EDS names Envoy would ask for: service_name of EDS clusters, else the cluster name."""
    return {n for anyp in clusters for n in describe(anyp)[1]}


def rds_names(listeners: Iterable[AnyProto]) -> set[str]:
    """Route configuration names referenced by the listeners' HTTP connection managers (rds)."""
    return {n for anyp in listeners for n in describe(anyp)[1]}


@dataclass
class Received:
    """One response as the client saw it."""

    at: float  # monotonic
    type_url: str
    version: str
    nonce: str
    names: tuple[str, ...]
    removed: tuple[str, ...] = ()
    nacked: bool = False


@dataclass
class TypeRecord:
    """What the client holds for one type."""

    resources: dict[str, AnyProto] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # delta: per-resource versions
    names: set[str] = field(default_factory=set)  # subscribed names (empty + wildcard for CDS/LDS)
    version: str = ""  # last accepted version (SotW) / system version (delta)
    nonce: str = ""  # last received nonce
    responses: int = 0
    nacks: int = 0
    first_at: float | None = None
    last_at: float | None = None


class AdsClient:
    """One simulated proxy on one ADS stream; one coroutine, no threads. Use start()/close() or `async with`."""

    def __init__(
        self,
        target: str,
        node_id: str,
        *,
        cluster: str = "sailmesh-test",
        delta: bool = False,
        metadata: Mapping[str, str] | None = None,
        nack: NackPolicy | None = None,
        follow: bool = True,
        keep_log: bool = True,
        initial_versions: Mapping[str, Mapping[str, str]] | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        if metadata:
            self.node.metadata.CopyFrom(struct_pb2.Struct(fields={k: struct_pb2.Value(string_value=v)
                                                                 for k, v in metadata.items()}))
        self.delta = delta
        self.nack = nack
        self.follow = follow
        self.keep_log = keep_log
        self.initial_versions = {t: dict(v) for t, v in (initial_versions or {}).items()}
        self.records: dict[str, TypeRecord] = {}
        self.log: list[Received] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.started_at = 0.0
        self.synced_at: float | None = None
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()  # set after every response handled; waiters clear it themselves
        self._own_channel = channel is None
        self._channel = channel
        self._call: grpc.aio.StreamStreamCall[Message, Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._sent_node = False

    async def __aenter__(self) -> AdsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- lifecycle --
    async def start(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = stub.DeltaAggregatedResources() if self.delta else stub.StreamAggregatedResources()
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._loop())
        for type_url in (CLUSTER, LISTENER):
            await self.subscribe(type_url, ())

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None and self._own_channel:
            await self._channel.close()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    # -- what tests read --
    def resources(self, type_url: str) -> dict[str, AnyProto]:
        rec = self.records.get(type_url)
        return dict(rec.resources) if rec else {}

    def record(self, type_url: str) -> TypeRecord:
        return self.records.setdefault(type_url, TypeRecord())

    async def wait_responses(self, type_url: str, count: int, timeout: float = 10.0) -> None:
        """Wait (without polling) until `count` responses of type_url were accepted."""
        async def reached() -> None:
            while self.record(type_url).responses < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(reached(), timeout)

    def responses(self, type_url: str | None = None) -> list[Received]:
        return [r for r in self.log if type_url is None or r.type_url == type_url]

    # -- requests --
    async def send(self, request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Write one raw request on the stream (tests use it for stale nonces and odd requests)."""
        if self._call is None:
            raise XdsError("client not started")
        if not self._sent_node:
            request.node.CopyFrom(self.node)
            self._sent_node = True
        async with self._write_lock:
            try:
                await self._call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the stream ended; the read loop records the status the server gave

    async def subscribe(self, type_url: str, names: Iterable[str]) -> None:
        """Set the names subscribed for a type (empty for CDS/LDS = wildcard) and send the request."""
        rec = self.record(type_url)
        new = set(names)
        if self.delta:
            first = rec.responses == 0 and not rec.names and not rec.nonce
            add, drop = sorted(new - rec.names), sorted(rec.names - new)
            rec.names = new
            for name in drop:  # like Envoy, forget what is no longer wanted
                rec.resources.pop(name, None)
                rec.versions.pop(name, None)
            req = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=add, resource_names_unsubscribe=drop)
            if first:
                versions = self.initial_versions.get(type_url, {})
                req.initial_resource_versions.update(versions)
                rec.versions.update(versions)
            elif not add and not drop:
                return
            await self.send(req)
        else:
            rec.names = new
            await self.send(discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=sorted(new), version_info=rec.version, response_nonce=rec.nonce))

    # -- the read loop --
    async def _loop(self) -> None:
        assert self._call is not None
        try:
            async for response in self._call:
                if self.delta:
                    await self._on_delta(response)
                else:
                    await self._on_sotw(response)
                self._check_synced()
                self.changed.set()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e

    async def _on_sotw(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        t = resp.type_url
        rec = self.record(t)
        now = time.monotonic()
        rec.nonce = resp.nonce
        got = {resource_name(a): a for a in resp.resources}
        detail = self.nack(t, got) if self.nack else None
        if self.keep_log:
            self.log.append(Received(now, t, resp.version_info, resp.nonce, tuple(got), nacked=detail is not None))
        if detail is not None:
            rec.nacks += 1
            await self.send(discovery_pb2.DiscoveryRequest(
                type_url=t, version_info=rec.version, response_nonce=resp.nonce, resource_names=sorted(rec.names),
                error_detail=status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=detail)))
            return
        if t in WILDCARD_TYPES:
            rec.resources = got
        else:
            # Like Envoy: over SotW only listeners and clusters are state-of-the-world; a subscribed endpoint
            # assignment or route configuration left out of a response is kept (xDS protocol, "Grouping
            # Resources into Responses").
            kept = {n: a for n, a in rec.resources.items() if n in rec.names and n not in got}
            rec.resources = {**kept, **got} if kept else got
        rec.version = resp.version_info
        self._touch(rec, now)
        await self.send(discovery_pb2.DiscoveryRequest(
            type_url=t, version_info=resp.version_info, response_nonce=resp.nonce, resource_names=sorted(rec.names)))
        await self._follow(t, rec)

    async def _on_delta(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        t = resp.type_url
        rec = self.record(t)
        now = time.monotonic()
        rec.nonce = resp.nonce
        got = {r.name: r.resource for r in resp.resources}
        detail = self.nack(t, got) if self.nack else None
        if self.keep_log:
            self.log.append(Received(now, t, resp.system_version_info, resp.nonce, tuple(got),
                                     tuple(resp.removed_resources), nacked=detail is not None))
        if detail is not None:
            rec.nacks += 1
            await self.send(discovery_pb2.DeltaDiscoveryRequest(
                type_url=t, response_nonce=resp.nonce,
                error_detail=status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=detail)))
            return
        for r in resp.resources:
            rec.resources[r.name] = r.resource
            rec.versions[r.name] = r.version
        for name in resp.removed_resources:
            rec.resources.pop(name, None)
            rec.versions.pop(name, None)
        rec.version = resp.system_version_info
        self._touch(rec, now)
        await self.send(discovery_pb2.DeltaDiscoveryRequest(type_url=t, response_nonce=resp.nonce))
        await self._follow(t, rec)

    @staticmethod
    def _touch(rec: TypeRecord, now: float) -> None:
        rec.responses += 1
        rec.last_at = now
        if rec.first_at is None:
            rec.first_at = now

    async def _follow(self, type_url: str, rec: TypeRecord) -> None:
        """Subscribe to the endpoints and routes that clusters and listeners reference, as Envoy does."""
        if not self.follow:
            return
        if type_url == CLUSTER:
            wanted, child = eds_names(rec.resources.values()), ENDPOINT
        elif type_url == LISTENER:
            wanted, child = rds_names(rec.resources.values()), ROUTE
        else:
            return
        current = self.records.get(child)
        if current is None and not wanted:
            return
        if current is None or current.names != wanted:
            await self.subscribe(child, wanted)

    def _check_synced(self) -> None:
        """Synced: every subscribed type answered (wildcard types, and named types with names)."""
        if self.synced.is_set():
            return
        for t, rec in self.records.items():
            if (t in WILDCARD_TYPES or rec.names) and rec.responses == 0:
                return
        if CLUSTER in self.records and LISTENER in self.records:
            self.synced_at = time.monotonic()
            self.synced.set()


@dataclass
class Fleet:
    """Many simulated proxies sharing a few gRPC channels (one HTTP/2 connection carries many streams)."""

    clients: list[AdsClient]
    channels: list[grpc.aio.Channel]

    async def wait_synced(self, timeout: float = 60.0) -> float:
        """Wait until every client is synced; returns the seconds from the first start to the last sync."""
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in self.clients)), timeout)
        return max(c.synced_at or 0.0 for c in self.clients) - min(c.started_at for c in self.clients)

    def sync_times(self) -> list[float]:
        """Each client's seconds from start to sync, sorted."""
        return sorted((c.synced_at - c.started_at) for c in self.clients if c.synced_at is not None)

    async def wait_responses(self, type_url: str, counts: list[int], timeout: float = 60.0) -> None:
        """Wait until client i has accepted counts[i] responses of type_url."""
        await asyncio.wait_for(asyncio.gather(*(c.wait_responses(type_url, n, timeout)
                                                for c, n in zip(self.clients, counts, strict=True))), timeout)

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for ch in self.channels:
            await ch.close()


async def start_fleet(
    target: str, count: int, *, delta: bool = False, per_channel: int = 50, prefix: str = "sim", keep_log: bool = False
) -> Fleet:
    """Start `count` clients named {prefix}-{i} (node ids), per_channel streams per gRPC channel."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, -(-count // per_channel)))]
    fleet = Fleet([], channels)
    try:
        for i in range(count):
            client = AdsClient(target, f"{prefix}-{i}", delta=delta, keep_log=keep_log,
                               channel=channels[i // per_channel])
            fleet.clients.append(client)
            await client.start()
    except BaseException:
        await fleet.close()
        raise
    return fleet
