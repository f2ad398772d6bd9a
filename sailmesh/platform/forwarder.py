"""The plain forwarder for workloads outside the mesh: what cluster DNS and kube-proxy are to a pod without a
sidecar, as an HTTP proxy.

An app without a sidecar gets `HTTP_PROXY=http://<its address>:15001` like one with a sidecar, but the listener
there is this forwarder, not Envoy. It resolves a service name the way a pod's resolver does (`httpbin` in the
client's namespace, `httpbin.bar`, `httpbin.bar.svc`, `httpbin.bar.svc.cluster.local`), picks one of the
service's workload addresses at the targetPort, connects from the client's own address and forwards bytes: no
TLS, no identity, no policy. A plaintext request to a workload whose sidecar is STRICT therefore fails as it does
in Istio (the connection closes, curl prints 000). A name that is not a service is dialled as given; a request
that cannot be delivered is closed without an answer, as a failed connect would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sailmesh.registry.endpoints import target_port
from sailmesh.registry.model import Service, Workload

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
               "trailer", "upgrade"}


class ForwardError(Exception):
    """A request the forwarder cannot deliver (bad request line, unknown service port, no endpoint)."""


class NameTable:
    """Service names -> workload addresses, as a pod's resolver plus kube-proxy would answer them."""

    def __init__(self, services: Iterable[Service], workloads: Iterable[Workload], domain_suffix: str) -> None:
        self.suffix = domain_suffix
        self.services = {s.hostname: s for s in services if s.selector is not None}
        self.workloads = list(workloads)

    def fqdn(self, host: str, client_namespace: str) -> str | None:
        """The service FQDN a host name means for a client in this namespace, or None when it names no service."""
        host = host.rstrip(".").lower()
        parts = host.split(".")
        candidates = []
        if len(parts) == 1:
            candidates.append(f"{host}.{client_namespace}.svc.{self.suffix}")
        elif len(parts) == 2:
            candidates.append(f"{host}.svc.{self.suffix}")
        elif len(parts) == 3 and parts[2] == "svc":
            candidates.append(f"{host}.{self.suffix}")
        candidates.append(host)
        return next((c for c in candidates if c in self.services), None)

    def endpoints(self, host: str, port: int, client_namespace: str) -> list[tuple[str, int]] | None:
        """Addresses serving host:port; None when host is not a service (dial it as given); [] when the service
        has no such port or no workload behind it."""
        fqdn = self.fqdn(host, client_namespace)
        if fqdn is None:
            return None
        svc = self.services[fqdn]
        sp = svc.port(port)
        if sp is None or not svc.selector:
            return []
        out = []
        for w in self.workloads:
            if w.namespace != svc.namespace or not w.healthy:
                continue
            if all(w.labels.get(k) == v for k, v in svc.selector.items()):
                number = target_port(w, sp)
                if number:
                    out.append((w.address, number))
        return out


@dataclass(frozen=True)
class Client:
    """Who a forwarder listener serves: the address it listens on (also the source of forwarded connections)."""

    address: str
    namespace: str
    name: str


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(method, target, version, headers) of an HTTP/1 request head."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes any byte
        raise ForwardError("undecodable request head") from e
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ForwardError(f"bad request line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ForwardError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return parts[0], parts[1], parts[2], headers


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """`host[:port]` (IPv6 in brackets) -> (host, port)."""
    parsed = urllib.parse.urlsplit("//" + value)
    try:
        port = parsed.port or default_port
    except ValueError as e:
        raise ForwardError(f"bad port in {value!r}") from e
    if not parsed.hostname:
        raise ForwardError(f"no host in {value!r}")
    return parsed.hostname, port


def rewrite(method: str, target: str, version: str, headers: Sequence[tuple[str, str]]) -> tuple[str, int, bytes]:
    """For a proxied (absolute-form) or plain (origin-form + Host) request: the destination and the head to send
    it in origin form, hop-by-hop headers dropped and `Connection: close` (one request per forwarded
    connection, so a kept-alive client connection is never reused for another destination)."""
    if target.startswith("/"):
        host_header = next((v for k, v in headers if k.lower() == "host"), "")
        host, port = split_hostport(host_header, 80)
        path = target
    else:
        url = urllib.parse.urlsplit(target)
        if url.scheme != "http":
            raise ForwardError(f"only http:// is forwarded (got {target!r}); use CONNECT for anything else")
        host, port = split_hostport(url.netloc, 80)
        path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in kept), "Connection: close", "", ""]
    return host, port, "\r\n".join(lines).encode("latin-1")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


class Forwarder:
    """One listener per workload outside the mesh, all on this event loop; start() binds them, stop() closes."""

    def __init__(self, table: NameTable) -> None:
        self.table = table
        self._servers: list[asyncio.Server] = []

    async def listen(self, client: Client, port: int) -> int:
        """Serve the forwarder on client.address:port for this workload; returns the bound port (port 0: any)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(client, reader, writer)

        server = await asyncio.start_server(handle, client.address, port, limit=MAX_HEAD)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _handle(self, client: Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, version, headers = parse_head(head)
            if method == "CONNECT":
                host, port = split_hostport(target, 443)
                first = b""
            else:
                host, port, first = rewrite(method, target, version, headers)
            up_reader, upstream = await self._connect(client, host, port)
            if method == "CONNECT":
                writer.write(f"{version} 200 Connection established\r\n\r\n".encode("latin-1"))
                await writer.drain()
            else:
                upstream.write(first)
            to_up = asyncio.create_task(_pipe(reader, upstream))
            await _pipe(up_reader, writer)
            to_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_up
        except (ForwardError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, TimeoutError) as e:
            log.info("forwarder %s/%s: closed without an answer: %s", client.namespace, client.name,
                     str(e) or type(e).__name__)
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await w.wait_closed()

    async def _connect(self, client: Client, host: str, port: int
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        found = self.table.endpoints(host, port, client.namespace)
        if found == []:
            raise ForwardError(f"{host}:{port}: no endpoint")
        dest_host, dest_port = random.choice(found) if found else (host, port)
        local = (client.address, 0) if _loopback(dest_host) else None
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(dest_host, dest_port, local_addr=local)

    async def stop(self) -> None:
        """Close every listener (open connections end with their peers)."""
        for s in self._servers:
            s.close()
        for s in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await s.wait_closed()
        self._servers.clear()


def _loopback(host: str) -> bool:
    """Connections to loopback destinations leave from the client's own loopback address (its "pod IP")."""
    return host.startswith("127.") or host == "localhost"
