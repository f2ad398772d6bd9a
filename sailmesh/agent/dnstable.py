"""The agent's side of the name-table stream (controlplane/nds.py): keeps the DNS proxy's table current.

Same address and credentials as Envoy's ADS connection (plaintext, or mTLS with the workload certificate and the
control plane's name istiod.istio-system.svc); the node is the one Envoy presents (bootstrap.node). Each table is
ACKed; one that cannot be read is NACKed and the last one kept; a broken stream is retried with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from sailmesh.agent import bootstrap
from sailmesh.agent.config import AgentConfig
from sailmesh.agent.identity import WorkloadCertificate
from sailmesh.xds.nds import NAME_TABLE_TYPE, NDS_FULL_METHOD, NameTable

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 0.5, 15.0


def node_message(cfg: AgentConfig) -> Any:
    """The Envoy Node proto of this agent's proxy."""
    node = base_pb2.Node()
    json_format.ParseDict(bootstrap.node(cfg), node)
    return node


class NameTableClient:
    """Streams NameTables into `on_table` until stopped."""

    def __init__(self, cfg: AgentConfig, on_table: Callable[[Any], None],
                 certificate: Callable[[], WorkloadCertificate | None] = lambda: None) -> None:
        self.cfg, self.on_table, self.certificate = cfg, on_table, certificate
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the stream."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _channel(self) -> grpc.aio.Channel | None:
        address = f"{self.cfg.xds_host}:{self.cfg.xds_port}"
        if not self.cfg.xds_tls:
            return grpc.aio.insecure_channel(address)
        cert = self.certificate()
        if cert is None:
            return None
        creds = grpc.ssl_channel_credentials(root_certificates=cert.roots_pem, private_key=cert.key_pem,
                                             certificate_chain=cert.chain_pem)
        return grpc.aio.secure_channel(address, creds,
                                       options=[("grpc.ssl_target_name_override", bootstrap.CONTROL_PLANE_SAN)])

    async def _run(self) -> None:
        retry = RETRY_MIN_S
        while True:
            channel = self._channel()
            if channel is None:  # no workload certificate yet
                await asyncio.sleep(RETRY_MIN_S)
                continue
            try:
                async with channel:
                    await self._stream(channel)
                    log.info("the name-table stream ended; reconnecting")
            except grpc.aio.AioRpcError as e:
                log.warning("name-table stream: %s %s; retrying in %.1fs", e.code().name, e.details(), retry)
            except (OSError, ValueError, grpc.aio.UsageError) as e:  # the loop must outlive one bad stream
                log.warning("name-table stream failed: %s; retrying in %.1fs", e, retry)
            else:
                retry = RETRY_MIN_S
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_MAX_S)

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        await outbox.put(discovery_pb2.DiscoveryRequest(node=node_message(self.cfg), type_url=NAME_TABLE_TYPE))

        async def requests() -> AsyncIterator[Any]:
            while True:
                yield await outbox.get()

        call = channel.stream_stream(NDS_FULL_METHOD,
                                     request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                     response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(requests())
        async for response in call:
            ack = discovery_pb2.DiscoveryRequest(type_url=NAME_TABLE_TYPE, version_info=response.version_info,
                                                 response_nonce=response.nonce)
            try:
                if len(response.resources) != 1 or response.resources[0].type_url != NAME_TABLE_TYPE:
                    raise DecodeError(f"want one {NAME_TABLE_TYPE}, got {len(response.resources)} resources")
                table = NameTable.FromString(response.resources[0].value)
            except DecodeError as e:
                log.warning("rejected name table %s: %s", response.version_info, e)
                ack.error_detail.code, ack.error_detail.message = 3, str(e)  # INVALID_ARGUMENT
            else:
                self.on_table(table)
                self.received += 1
            await outbox.put(ack)
