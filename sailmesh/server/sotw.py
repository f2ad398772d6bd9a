"""State-of-the-world ADS: full resource sets per type, ACK/NACK by nonce, name-subscription changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from sailmesh.server.connection import Connection, Send, WatchState
from sailmesh.server.hashing import digest_resources, length_delimited
from sailmesh.server.metrics import type_label
from sailmesh.xds.types import CLUSTER, ENDPOINT, WILDCARD_TYPES

_EMPTY_DIGEST = digest_resources({})


def _same_names(names: Sequence[str], subscribed: frozenset[str]) -> bool:
    """A request's names (without `*`) are the subscription: checked without building a set of them (an ACK of an
    unscoped EDS subscription names 3,500 clusters, 500 proxies ACK each push). Envoy never repeats a name in a
    request; one that did, with as many names as subscribed, reads as unchanged, and the names it left out are still
    sent (SotW EDS/RDS: resources not asked for are ignored by the proxy)."""
    return len(names) == len(subscribed) and subscribed.issuperset(names)


def _is_wildcard(type_url: str, names: list[str]) -> bool:
    """Listener and Cluster with no names (legacy) or "*" are wildcard subscriptions."""
    return "*" in names or (type_url in WILDCARD_TYPES and not names)


def _names_part(request: discovery_pb2.DiscoveryRequest, data: bytes) -> bytes | None:
    """The bytes of `data` between its version (field 1) and its type URL and nonce (fields 4, 5), as protobuf
    serializers write a request without a node or an error: its names (field 3). None for any other layout.

    Two requests with the same names part and these fields parse to the same names (a field repeated inside the
    part is overridden by the same trailing fields in both), so an ACK whose part equals that of an ACK already
    found to keep the subscription keeps it too, without reading 3,500 names (an unscoped EDS ACK)."""
    version = request.version_info
    head = length_delimited(1, version.encode()) if version else b""
    tail = length_delimited(4, request.type_url.encode()) + length_delimited(5, request.response_nonce.encode())
    if len(data) < len(head) + len(tail) or not data.startswith(head) or not data.endswith(tail):
        return None
    return data[len(head):len(data) - len(tail)]


class SotwConnection(Connection):
    """A StreamAggregatedResources stream."""

    delta = False

    def _ack_state(self, request: discovery_pb2.DiscoveryRequest) -> WatchState | None:
        """The type's state if `request` answers its current response without an error (an ACK, maybe with
        other names)."""
        st = self.types.get(request.type_url)
        if st is None or not request.response_nonce or request.response_nonce != st.sent_nonce \
                or request.HasField("error_detail"):
            return None
        return st

    def try_ack_bytes(self, data: bytes) -> bool:
        """The ACK of a type's current response is its version, the names part, its type URL and its nonce, in
        protobuf's field order (as Envoy writes it): bytes equal to those parse to exactly that request, so it is
        recorded without parsing it. An unscoped EDS ACK names every cluster (0.17 MB at 1,000 services): parsing
        500 of them took ~0.1 s of CPU per endpoint push."""
        if self._requests:
            return False  # requests are served in order
        size = len(data)
        for st in self.types.values():
            names = st.names_bytes
            if names is None or not st.sent_nonce or len(names) >= size:
                continue
            head = st.ack_head
            if len(head) + len(names) + len(st.ack_tail) != size or not data.endswith(st.ack_tail) \
                    or not data.startswith(head) or not data.startswith(names, len(head)):
                continue
            self.on_ack(st, st.sent_version, st.sent_nonce)
            return True
        return False

    def mark_sent(self, st: WatchState, version: str, nonce: str, count: int, started: float | None) -> None:
        super().mark_sent(st, version, nonce, count, started)
        # what an ACK of this response looks like around its names (try_ack_bytes)
        st.ack_head = length_delimited(1, version.encode()) if version else b""
        st.ack_tail = length_delimited(4, st.type_url.encode()) + length_delimited(5, nonce.encode())

    def try_ack(self, request: Message, names: list[str] | None = None, data: bytes | None = None) -> bool:
        assert isinstance(request, discovery_pb2.DiscoveryRequest)
        st = self._ack_state(request)
        if st is None:
            return False
        if names is None:
            names = list(request.resource_names)
        if not self._unchanged(st, names):
            return False  # the subscription changed: the loop answers
        if data is not None and not request.HasField("node"):
            part = _names_part(request, data)  # these names keep the subscription
            st.names_bytes = None if part is None else self.hashes.shared(part)
        self.on_ack(st, request.version_info, request.response_nonce)
        return True

    def _unchanged(self, st: WatchState, names: list[str]) -> bool:
        """The request keeps the type's subscription as it is."""
        wildcard = _is_wildcard(st.type_url, names)
        if wildcard != st.wildcard:
            return False
        if wildcard:
            return True
        assert isinstance(st.names, frozenset)
        return _same_names(names, st.names) or self.hashes.names(names) == st.names

    async def handle_request(self, request: Message, send: Send) -> None:
        st = self._take_request(request)
        # The request is let go of before the response waits for the send budget: an unscoped EDS request names
        # every cluster (1 MB at 5,000 services, parsed, plus 17,500 str objects read from it), and a first push
        # to 250 proxies had all of theirs held while waiting; freed afterwards, Python's allocator kept ~250 MB
        # of them as empty pools it never gives back. The caller (run()) holds no reference either.
        del request
        if st is not None:
            await self.respond(st, send, force=True, started=None)

    def _take_request(self, request: Message) -> WatchState | None:
        """Apply a request to its type's state; returns the state when a response must be sent (forced)."""
        assert isinstance(request, discovery_pb2.DiscoveryRequest)
        type_url = request.type_url
        st = self.types.get(type_url)
        names = list(request.resource_names)
        if st is None or not request.response_nonce:
            # A new subscription, or the proxy (re)connected and asks again: always answer.
            st = self.watch(type_url)
            st.wildcard = _is_wildcard(type_url, names)
            st.names = self.hashes.names(names)
            st.names_bytes = None
            return st
        if request.response_nonce != st.sent_nonce:
            # Stale: the proxy answers an older response; a newer one is on its way (Envoy repeats the names).
            self.metrics.expired_nonce.inc(type=type_label(type_url))
            return None
        if request.HasField("error_detail"):
            self.on_nack(st, request.error_detail.message or f"code {request.error_detail.code}")
            return None
        self.on_ack(st, request.version_info, request.response_nonce)
        if not self._unchanged(st, names):
            st.wildcard, st.names = _is_wildcard(type_url, names), self.hashes.names(names)
            st.names_bytes = None
            return st
        return None

    def _updates_eds_clusters(self, st: WatchState, parts: tuple[Mapping[str, AnyProto], ...]) -> bool:
        """Sending `parts` as the clusters updates a cluster the proxy subscribed to endpoints for (Envoy's EDS
        names are the EDS clusters' names): True also when what the proxy holds is not known (nothing ACKed since
        the last clusters sent)."""
        eds = self.types.get(ENDPOINT)
        if eds is None:
            return False  # no endpoints subscribed: nothing to warm (a later EDS request is answered)
        if not st.sent_parts or st.acked_nonce != st.sent_nonce or st.acked_version != st.sent_version:
            return True
        updated = self.hashes.changed(st.sent_parts, parts)
        return bool(updated) and (eds.wildcard or not eds.names.isdisjoint(updated))

    def _updated_only(self, st: WatchState, parts: tuple[Mapping[str, AnyProto], ...],
                      names: frozenset[str] | None) -> frozenset[str] | None:
        """The subscribed endpoint assignments a push updates, when sending only them brings the proxy to the
        new state: it ACKed the last response, built for the same subscription, and the push adds or removes no
        assignment. None: send them all.

        Over SotW only listeners and clusters are state-of-the-world; a ClusterLoadAssignment left out of a
        response is kept by the proxy (xDS protocol, "Grouping Resources into Responses"), and Istio's
        incremental EDS push sends only the updated services' assignments. Without Sidecar scoping each proxy
        subscribes to the endpoints of every cluster (3,500 at 1,000 services): a change of one service's
        workloads re-sent all of them to every proxy."""
        if names is None or not st.sent_parts or st.sent_names is not names or st.acked_nonce != st.sent_nonce \
                or st.acked_version != st.sent_version:
            return None
        updated = self.hashes.updated_only(st.sent_parts, parts)
        if updated is None:
            return None
        subscribed = updated & names
        return subscribed or None

    async def respond(self, st: WatchState, send: Send, *, force: bool, started: float | None) -> bool:
        names = None if st.wildcard else self.hashes.names(st.names)
        generated = self.generate(st.type_url, names)
        if generated is None:
            return False
        count, digests, chosen_parts = 0, [], []
        for part in generated.parts:  # each part hashed and encoded once, whoever shares it
            chosen, part_digest = self.hashes.subset(part, names)
            if chosen:
                count += len(chosen)
                digests.append(part_digest)
                chosen_parts.append(chosen)
        digest = digests[0] if len(digests) == 1 else b"".join(digests) if digests else _EMPTY_DIGEST
        if digest == st.nacked_digest:
            return False  # the proxy rejected exactly this: do not send it again
        if not force and digest == st.sent_digest:
            if st.type_url == CLUSTER and st.sent_parts:
                st.sent_parts = generated.parts  # the same bytes; hold the current mappings, not older ones
            return False  # byte-identical to what the proxy has
        updated = None if force or st.type_url != ENDPOINT else self._updated_only(st, generated.parts, names)
        if st.type_url == CLUSTER:
            self.eds_warming = self._updates_eds_clusters(st, generated.parts)
            st.sent_parts = generated.parts
        elif st.type_url == ENDPOINT:
            st.sent_parts, st.sent_names = generated.parts, names
        if updated is not None:
            chosen_parts = [c for c in (self.hashes.subset(part, updated)[0] for part in generated.parts) if c]
        version = self.next_version(st)
        # Versions never repeat on a stream (next_version), so neither do these nonces; and proxies given the same
        # resources at the same version get the same response bytes: built once, not copied per proxy.
        nonce = f"{version}-{digest[:6].hex()}"
        # The parts are encoded only when the response is not shared yet: a body kept for a response every proxy
        # of a scope gets would be a second copy of its bytes.
        key = (st.type_url, version, digest, updated)
        # The bytes are leased before a response is built: a first push to 2,000 proxies built every proxy's
        # clusters response (megabytes each, its own) and then waited for the budget, all of them held at once.
        cached = self.hashes.peek(key)
        size = len(cached) if cached is not None else sum(map(self.hashes.size, chosen_parts)) + 64 + len(nonce)
        lease = self.budget.try_lease(size) or await self.budget.lease(size)  # inline budget.hold()
        try:
            def build() -> bytes:
                return b"".join((length_delimited(1, version.encode()), *map(self.hashes.encoded, chosen_parts),
                                 length_delimited(4, st.type_url.encode()), length_delimited(5, nonce.encode())))

            # Cached for the source's current version only: one stamped from an older version (the source moved on
            # while this waited for the budget) is never asked for again.
            current = self.source.version()
            response = self.hashes.response(key, build, current) if st.base_version == current else build()
            st.sent_digest = digest
            self.mark_sent(st, version, nonce, count, started)
            try:
                await send(response)
            except Exception:
                self.metrics.send_errors.inc(type=type_label(st.type_url))
                raise
        finally:
            lease.release()
        return True
