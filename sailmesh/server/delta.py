"""Incremental (delta) ADS: per-resource versions, only changed and removed resources are sent."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from sailmesh.server.connection import Connection, Send, WatchState
from sailmesh.server.metrics import type_label
from sailmesh.xds.types import WILDCARD_TYPES


class DeltaConnection(Connection):
    """A DeltaAggregatedResources stream (Envoy's DELTA_GRPC)."""

    delta = True

    async def handle_request(self, request: Message, send: Send) -> None:
        assert isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
        type_url = request.type_url
        st = self.types.get(type_url)
        first = st is None
        if st is None:
            st = self.watch(type_url)
            subscribe = list(request.resource_names_subscribe)
            # Listener/Cluster: an initial request without names is a wildcard subscription.
            st.wildcard = type_url in WILDCARD_TYPES and not subscribe
            # On reconnect the proxy tells what it holds: only what differs is sent again.
            st.client_versions = dict(request.initial_resource_versions)
        if request.response_nonce:
            if request.response_nonce != st.sent_nonce:
                self.metrics.expired_nonce.inc(type=type_label(type_url))
            elif request.HasField("error_detail"):
                self.on_nack(st, request.error_detail.message or f"code {request.error_detail.code}")
            else:
                self.on_ack(st, st.sent_version, request.response_nonce)
        # Subscription changes are incremental: apply them whatever the nonce says.
        added: set[str] = set()
        names = st.names
        assert isinstance(names, set)  # a delta subscription's names are only ever the set edited here
        for name in request.resource_names_unsubscribe:
            if name == "*":
                st.wildcard = False
            else:
                names.discard(name)
                st.client_versions.pop(name, None)
        for name in request.resource_names_subscribe:
            if name == "*":
                if not st.wildcard:
                    added.add(name)
                st.wildcard = True
            elif name not in names:
                names.add(name)
                added.add(name)
        self.limits.check_subscribed(type_url, len(names))
        if first or added:
            await self.respond(st, send, force=True, started=None, asked=added)

    async def respond(
        self, st: WatchState, send: Send, *, force: bool, started: float | None, asked: set[str] | None = None
    ) -> bool:
        generated = self.generate(st.type_url)
        if generated is None:
            return False
        available = generated.resources
        if st.wildcard:
            wanted = available
        else:
            wanted = {n: available[n] for n in st.names if n in available}
        changed: list[discovery_pb2.Resource] = []
        for name in sorted(wanted):
            anyp = wanted[name]
            version = self.hashes.version(anyp)
            if st.client_versions.get(name) != version:
                changed.append(discovery_pb2.Resource(name=name, version=version, resource=anyp))
        removed = [n for n in st.client_versions if n not in wanted]
        # Names just asked for that do not exist: say so, so the proxy stops waiting for them.
        removed += sorted(n for n in (asked or ()) if n != "*" and n not in wanted and n not in st.client_versions)
        if not changed and not removed and not force:
            return False
        version = self.next_version(st)
        nonce = self.next_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=st.type_url, nonce=nonce, removed_resources=removed
        )
        response.resources.extend(changed)
        for name in removed:
            st.client_versions.pop(name, None)
        for r in changed:
            st.client_versions[r.name] = r.version
        self.mark_sent(st, version, nonce, len(wanted), started)
        async with self.budget.hold(response.ByteSize()):
            try:
                await send(response)
            except Exception:
                self.metrics.send_errors.inc(type=type_label(st.type_url))
                raise
        return True
