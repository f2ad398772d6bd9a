"""The agent's SDS server: Istio's secrets `default` (chain + key) and `ROOTCA` (trust bundle) to Envoy over a Unix
socket in the agent's private state dir (state-of-the-world streams; a rotation is pushed on every open stream).

Only processes that can open the socket (the directory is 0700) can ask for the key, as with Istio's
`workload-spiffe-uds/socket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2, json_format

from sailmesh.agent.identity import WorkloadCertificate
from sailmesh.ca.authority import write_private
from sailmesh.errors import AgentError
from sailmesh.xds.types import SECRET

log = logging.getLogger(__name__)

DEFAULT = "default"
ROOTCA = "ROOTCA"
SOCKET = "sds.sock"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


def socket_path(state_dir: Path) -> Path:
    """`<state dir>/sds.sock`, or, when that is too long for a Unix socket, a socket in a private (0700, ours)
    directory under the temp dir named after the state dir."""
    path = state_dir / SOCKET
    if len(str(path)) <= MAX_UNIX_PATH:
        return path
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sailmesh-{os.getuid()}-{digest}" / SOCKET


def _private_dir(folder: Path) -> None:
    """Create `folder` 0700, or accept it only if this user owns it and nobody else may enter it."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    st = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise AgentError(f"{folder} is not a private directory of this user; refusing to put the SDS socket there")


def secrets_of(cert: WorkloadCertificate, default_name: str = DEFAULT, root_name: str = ROOTCA) -> dict[str, Any]:
    """The two secrets Istio's agent serves, as Envoy Secret messages."""
    default = secret_pb2.Secret(name=default_name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=cert.chain_pem),
        private_key=base_pb2.DataSource(inline_bytes=cert.key_pem)))
    root = secret_pb2.Secret(name=root_name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=cert.roots_pem)))
    return {default_name: default, root_name: root}


XDS_CERT, XDS_ROOT = "xds-cert", "xds-root"
XDS_CERT_FILE, XDS_ROOT_FILE = "xds-cert.json", "xds-root.json"


def write_xds_secrets(cert: WorkloadCertificate, folder: Path) -> None:
    """The certificate for the connection to the control plane, as file-based SDS responses Envoy watches
    (`xds-cert` with chain and key in one file, so Envoy never reads a key that does not match its certificate;
    `xds-root`), each 0600 in a 0700 dir and replaced atomically (a rename Envoy's watched_directory sees).
    The xds-grpc cluster cannot use `sds-grpc`: Envoy needs the xDS connection before it asks SDS anything."""
    _private_dir(folder)
    secrets = secrets_of(cert, XDS_CERT, XDS_ROOT)
    for name, file in ((XDS_ROOT, XDS_ROOT_FILE), (XDS_CERT, XDS_CERT_FILE)):
        response = discovery_pb2.DiscoveryResponse(type_url=SECRET, version_info=str(cert.serial))
        response.resources.add().Pack(secrets[name])
        write_private(folder / file, json_format.MessageToJson(response).encode())


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]  # base has no stubs
    """Serves the current WorkloadCertificate; update() pushes a new one to every stream."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._secrets: dict[str, Any] = {}
        self._version = 0
        self._streams: set[asyncio.Queue[object]] = set()
        self._nonces = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.pushes = 0

    async def start(self) -> None:
        if len(str(self.socket_path)) > MAX_UNIX_PATH:
            raise AgentError(f"SDS socket path is too long for a Unix socket ({len(str(self.socket_path))} bytes): "
                             f"{self.socket_path}")
        _private_dir(self.socket_path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # left over from a previous run
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        if not server.add_insecure_port(f"unix:{self.socket_path}"):
            raise AgentError(f"cannot listen on {self.socket_path}")
        await server.start()
        os.chmod(self.socket_path, 0o600)
        self._server = server
        log.info("SDS listening on %s", self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def update(self, cert: WorkloadCertificate) -> None:
        """A new certificate: every stream gets the secrets it asked for again."""
        self._secrets = secrets_of(cert)
        self._version += 1
        for queue in self._streams:
            queue.put_nowait(None)

    def _response(self, names: list[str]) -> discovery_pb2.DiscoveryResponse | None:
        resources = []
        for name in names:
            secret = self._secrets.get(name)
            if secret is not None:
                packed = any_pb2.Any()
                packed.Pack(secret)
                resources.append(packed)
        if not resources:
            return None  # nothing yet: Envoy keeps waiting (warming) until the first certificate arrives
        return discovery_pb2.DiscoveryResponse(version_info=str(self._version), type_url=SECRET,
                                               nonce=str(next(self._nonces)), resources=resources)

    async def StreamSecrets(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._streams.add(queue)

        async def read() -> None:
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                async for request in request_iterator:
                    queue.put_nowait(request)
            queue.put_nowait(StopAsyncIteration)

        reader = asyncio.create_task(read())
        names: list[str] = []
        sent_version = ""
        try:
            while True:
                item = await queue.get()
                if item is StopAsyncIteration:
                    return
                if isinstance(item, discovery_pb2.DiscoveryRequest):
                    if item.HasField("error_detail"):
                        log.warning("Envoy rejected secrets %s: %s", list(item.resource_names),
                                    item.error_detail.message)
                        continue
                    asked = sorted(item.resource_names)
                    if asked == names and item.response_nonce and sent_version == str(self._version):
                        continue  # an ACK of what we sent
                    names = asked
                elif sent_version == str(self._version):
                    continue
                response = self._response(names)
                if response is not None:
                    sent_version = response.version_info
                    self.pushes += 1
                    yield response
        finally:
            self._streams.discard(queue)
            reader.cancel()

    async def FetchSecrets(self, request: Any, context: Any) -> Any:
        response = self._response(sorted(request.resource_names))
        if response is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no certificate yet")
        return response

    async def DeltaSecrets(self, request_iterator: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta SDS is not served; use StreamSecrets")
