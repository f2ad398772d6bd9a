"""Many lean ADS clients in one process, driven over stdin/stdout (JSON lines) by the benchmark.

Each client is one SotW stream on its own gRPC channel (its own TCP connection, like an Envoy). It
subscribes to CDS and LDS (wildcard), follows EDS names from EDS clusters and RDS names from HTTP
connection managers, and ACKs every response at once, as Envoy does. Unlike sailmesh.testing's AdsClient
it never decodes a response into protobuf messages: gRPC hands it the response's bytes, it reads the
version, nonce and type URL and walks the resources on the wire (wire.py), keeping only versions, nonces and
counts. The names a resource references are cached by its serialized bytes (every proxy of a mesh gets mostly
the same bytes); a client's EDS/RDS subscription and the names part of its requests are one object shared by
every client that references the same names. Requests are written on the wire too, fields in number order as
Envoy writes them. So one process drives hundreds of clients at 5,000 services (17,500 clusters each).

Commands (one JSON object per line) and replies:
  {"cmd": "connect", "target": "host:port", "proxies": [{"id", "metadata"}], "timeout": s}
      -> {"synced": {id: monotonic time all of CDS/EDS/LDS/RDS were first ACKed}, "errors": {id: text},
          "counts": {id: {"cds": n, ...}}}
  {"cmd": "mark"} -> {"ok": true}     remember every client's ACKed versions and response counts
  {"cmd": "wait", "type": "rds", "ids": [...] | null, "timeout": s}
      -> {"acked": {id: monotonic time of the ACK of the first new version}, "missing": [ids],
          "types": {"cds": clients that got one since mark, ...}}
  {"cmd": "trim"} -> {"rss_before": bytes, "rss_after": bytes}   gc, then glibc's malloc_trim(0)
  {"cmd": "close"} -> {"ok": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import json
import os
import random
import sys
import time
from dataclasses import dataclass

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import struct_pb2

from bench.controlplane import wire

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds"}
BY_SHORT = {v: k for k, v in SHORT.items()}
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
# own subchannel pool: every client gets its own TCP connection, as every Envoy has (grpc shares them otherwise)
RETRY_BASE_S = 0.1
RETRY_MAX_S = 2.0
_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024), ("grpc.use_local_subchannel_pool", 1)]

# serialized resource (Any) -> the EDS / RDS names it references (shared by every client of this process); looked
# up with memoryview slices of a response (hashed and compared by content, no copy)
_REFS: dict[bytes, tuple[str, ...]] = {}
# a subscription's names -> (the one tuple every client with these names holds, their requests' names part)
_SUBSCRIPTIONS: dict[tuple[str, ...], tuple[tuple[str, ...], bytes]] = {}
_NO_NAMES: tuple[tuple[str, ...], bytes] = ((), b"")


def _cluster_refs(value: bytes) -> tuple[str, ...]:
    c = cluster_pb2.Cluster.FromString(value)
    if c.WhichOneof("cluster_discovery_type") == "type" and c.type == cluster_pb2.Cluster.EDS:
        return (c.eds_cluster_config.service_name or c.name,)
    return ()


def _listener_refs(value: bytes) -> tuple[str, ...]:
    lis = listener_pb2.Listener.FromString(value)
    chains = [*lis.filter_chains, *([lis.default_filter_chain] if lis.HasField("default_filter_chain") else [])]
    out = []
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url == _HCM_TYPE:
                hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                if hcm.HasField("rds"):
                    out.append(hcm.rds.route_config_name)
    return tuple(out)


def referenced(type_url: str, resources: list) -> set[str]:
    """EDS names of EDS clusters, or RDS names of listeners' HTTP connection managers (cached by bytes); resources
    are Any messages."""
    parse = _cluster_refs if type_url == CDS else _listener_refs
    if len(_REFS) > 500_000:
        _REFS.clear()
    names: set[str] = set()
    for anyp in resources:
        value = anyp.value
        refs = _REFS.get(value)
        if refs is None:
            refs = _REFS[value] = parse(value)
        names.update(refs)
    return names


def referenced_raw(type_url: str, resources: list[memoryview]) -> tuple[tuple[str, ...], bytes]:
    """referenced() for serialized Anys: the names as the tuple shared by every client referencing the same
    names, and its requests' names part."""
    parse = _cluster_refs if type_url == CDS else _listener_refs
    if len(_REFS) > 500_000:
        _REFS.clear()
    get = _REFS.get
    found = []
    for anyp in resources:
        refs = get(anyp)  # type: ignore[call-overload]
        if refs is None:
            refs = _REFS[bytes(anyp)] = parse(bytes(wire.any_value(anyp)))
        if refs:
            found.append(refs)
    if not found:
        return _NO_NAMES
    # in the response's order, each name once (as Envoy, which does not sort them either): sorting 17,500 names per
    # response was a third of a simulated proxy's CPU at 5,000 services
    key = tuple(dict.fromkeys(itertools.chain.from_iterable(found)))
    shared = _SUBSCRIPTIONS.get(key)
    if shared is None:
        if len(_SUBSCRIPTIONS) > 10_000:
            _SUBSCRIPTIONS.clear()
        shared = _SUBSCRIPTIONS[key] = (key, wire.names_part(key))
    return shared


@dataclass(slots=True)
class TypeState:
    names: tuple[str, ...] = ()
    names_part: bytes = b""  # the names on the wire (shared, see _SUBSCRIPTIONS)
    nonce: str = ""
    version: str = ""  # last ACKed
    acked_at: float = 0.0
    responses: int = 0
    resources: int = 0


class LeanClient:
    """One simulated proxy: SotW ADS, ACK everything, follow EDS/RDS names; responses read on the wire."""

    def __init__(self, target: str, node_id: str, metadata: dict[str, str], on_ack: object) -> None:
        self.target = target
        self.node_id = node_id
        self.metadata = metadata
        self.on_ack = on_ack
        self.types: dict[str, TypeState] = {}
        self.synced_at: float | None = None
        self.error = ""  # the last stream error (the client retries, as Envoy does)
        self.retries = 0
        self._closing = False
        self._channel: grpc.aio.Channel | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        self._queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()

    async def _requests(self):
        while True:
            req = await self._queue.get()
            if req is None:
                return
            yield req

    def _request(self, type_url: str, node: bytes = b"") -> None:
        st = self.types[type_url]
        self._queue.put_nowait(wire.request(type_url, st.version, st.nonce, st.names_part, node))

    def _node(self) -> bytes:
        node = base_pb2.Node(id=self.node_id, cluster="bench")
        node.metadata.CopyFrom(struct_pb2.Struct(fields={k: struct_pb2.Value(string_value=v)
                                                         for k, v in self.metadata.items()}))
        return node.SerializeToString()

    async def _run(self) -> None:
        """One stream at a time; like Envoy, start a new one (fresh subscriptions) after an error, with backoff."""
        assert self._channel is not None
        node = self._node()
        # no serializers: requests are written and responses read as bytes (wire.py)
        call = self._channel.stream_stream(ADS_METHOD)
        backoff = RETRY_BASE_S
        while True:
            self._queue = asyncio.Queue()
            self.types = {CDS: TypeState(), LDS: TypeState()}
            self._request(CDS, node)
            self._request(LDS)
            try:
                stream = call(self._requests())
                while True:
                    # read(), not `async for`: grpc.aio's response iterator holds the last message while it waits
                    # for the next, so each simulated proxy held its last response (megabytes at 5,000 services)
                    data = await stream.read()
                    if data is grpc.aio.EOF:
                        break
                    self._on_response(data)
                    backoff = RETRY_BASE_S
                    del data
                if self._closing:
                    return
                self.error = "stream closed by the server"
                self.retries += 1
            except grpc.aio.AioRpcError as e:
                # CANCELLED may come from the server too (e.g. gRPC core shedding queued calls): only our
                # own close() ends the client; like Envoy, retry anything else
                if self._closing:
                    return
                self.error = f"{e.code().name}: {e.details()}"
                self.retries += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(RETRY_MAX_S, backoff * 2)

    def _on_response(self, data: bytes) -> None:
        resp = wire.read_response(data)
        t = resp.type_url
        st = self.types.get(t)
        if st is None:
            st = self.types[t] = TypeState()
        st.nonce = resp.nonce
        # like Envoy: ask for the endpoints/routes of new clusters/listeners, then ACK
        child = EDS if t == CDS else RDS if t == LDS else None
        if child is not None:
            wanted, part = referenced_raw(t, resp.resources)
            cst = self.types.get(child)
            if cst is None or (cst.names is not wanted and cst.names != wanted):
                if cst is None:
                    cst = self.types[child] = TypeState()
                cst.names, cst.names_part = wanted, part
                self._request(child)
        st.version = resp.version
        st.responses += 1
        st.resources = len(resp.resources)
        del resp
        self._request(t)
        st.acked_at = time.monotonic()
        if self.synced_at is None and all(
            x in self.types and self.types[x].responses for x in (CDS, EDS, LDS, RDS)
        ):
            self.synced_at = st.acked_at
        self.on_ack(self, t)  # type: ignore[operator]


class Worker:
    """The clients of this process and the waits the coordinator asked for."""

    def __init__(self) -> None:
        self.clients: dict[str, LeanClient] = {}
        self.marked: dict[str, dict[str, tuple[str, int]]] = {}
        self._wait: tuple[str, set[str], dict[str, float], asyncio.Future[None]] | None = None
        self._sync_left: set[str] = set()
        self._sync_done: asyncio.Future[None] | None = None

    def on_ack(self, client: LeanClient, type_url: str) -> None:
        if self._sync_done is not None and client.synced_at is not None and client.node_id in self._sync_left:
            self._sync_left.discard(client.node_id)
            if not self._sync_left and not self._sync_done.done():
                self._sync_done.set_result(None)
        if self._wait is not None:
            wt, left, acked, fut = self._wait
            if type_url == wt and client.node_id in left:
                st = client.types[type_url]
                if st.version != self.marked.get(client.node_id, {}).get(type_url, ("", 0))[0]:
                    left.discard(client.node_id)
                    acked[client.node_id] = st.acked_at
                    if not left and not fut.done():
                        fut.set_result(None)

    async def connect(self, target: str, proxies: list[dict], timeout: float) -> dict:
        loop = asyncio.get_running_loop()
        self._sync_done = loop.create_future()
        self._sync_left = {p["id"] for p in proxies}
        if not self._sync_left:
            self._sync_done.set_result(None)  # nothing to connect in this batch
        for p in proxies:
            c = LeanClient(target, p["id"], p["metadata"], self.on_ack)
            self.clients[c.node_id] = c
            c.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._sync_done), timeout)
        trim()  # the first push's responses are gone: give their memory back before the next batch
        return {
            "synced": {c.node_id: c.synced_at for c in self.clients.values() if c.synced_at is not None},
            "errors": {c.node_id: c.error or "not synced" for c in self.clients.values() if c.synced_at is None},
            "retries": {c.node_id: [c.retries, c.error] for c in self.clients.values() if c.retries},
            "counts": {c.node_id: {SHORT[t]: st.resources for t, st in c.types.items()}
                       for c in self.clients.values()},
        }

    def mark(self) -> dict:
        self.marked = {c.node_id: {t: (st.version, st.responses) for t, st in c.types.items()}
                       for c in self.clients.values()}
        return {"ok": True}

    async def wait(self, short: str, ids: list[str] | None, timeout: float) -> dict:
        type_url = BY_SHORT[short]
        wanted = set(self.clients) if ids is None else {i for i in ids if i in self.clients}
        acked: dict[str, float] = {}
        left = set()
        for i in wanted:
            st = self.clients[i].types.get(type_url)
            if st is not None and st.version != self.marked.get(i, {}).get(type_url, ("", 0))[0]:
                acked[i] = st.acked_at
            else:
                left.add(i)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not left:
            fut.set_result(None)
        self._wait = (type_url, left, acked, fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        self._wait = None
        if _rss() > TRIM_ABOVE:  # a push of megabytes to every client (routes at 5,000 services): give it back
            trim()
        types: dict[str, int] = {}
        for c in self.clients.values():
            for t, st in c.types.items():
                if st.responses > self.marked.get(c.node_id, {}).get(t, ("", 0))[1]:
                    types[SHORT[t]] = types.get(SHORT[t], 0) + 1
        return {"acked": acked, "missing": sorted(left), "types": types}

    async def close(self) -> dict:
        await asyncio.gather(*(c.close() for c in self.clients.values()))
        return {"ok": True}


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# A worker trims after a wait only above this RSS: trimming gives pages back that the next push faults in again
# (130 ms of the clients' CPU per push at 1,000 services, on the control plane's cores)
TRIM_ABOVE = 512 * 2**20


def trim() -> dict:
    """Give the allocator's free memory back to the system (glibc keeps what a burst of large responses freed);
    the RSS before and after."""
    before = _rss()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {"rss_before": before, "rss_after": _rss(), "refs": len(_REFS), "refs_bytes": sum(map(len, _REFS)),
            "subscriptions": len(_SUBSCRIPTIONS), "blocks": sys.getallocatedblocks()}


async def serve() -> None:
    """Read commands from stdin, answer on stdout, one line each."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while True:
        line = await reader.readline()
        if not line:
            await worker.close()
            return
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "connect":
            reply = await worker.connect(cmd["target"], cmd["proxies"], float(cmd.get("timeout", 300)))
        elif name == "mark":
            reply = worker.mark()
        elif name == "wait":
            reply = await worker.wait(cmd["type"], cmd.get("ids"), float(cmd.get("timeout", 60)))
        elif name == "trim":
            reply = trim()
        elif name == "close":
            reply = await worker.close()
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            return
        else:
            reply = {"error": f"unknown command {name}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve())
