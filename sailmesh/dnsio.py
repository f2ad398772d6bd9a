"""DNS serving shared by the agent's DNS proxy and the control plane's mesh DNS: UDP and TCP listeners on one port,
answers sized to the client's limit, and forwarding to upstream nameservers (resolv.conf's, by default).

Forwarding is Istio's agent's (pkg/dns/client/dns.go): the query as is, over the protocol it came in on, to the
upstreams one after the other (or all at once, the first answer winning); the first upstream that answers gives the
response, whatever its rcode (NXDOMAIN, SERVFAIL included); None when none answers in time (the caller answers
SERVFAIL). dnspython's query module is imported on first use: it loads an HTTP/2 client stack (~0.2 CPU s).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode

from sailmesh.errors import SailmeshError

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT_S = 5.0  # Istio's agent's upstream timeout
MIN_UDP_SIZE, MAX_TCP_SIZE = 512, 65535

Server = tuple[str, int]  # an upstream nameserver: (IP, port)
# the response to a query: (query, over TCP, the client's (host, port))
Resolve = Callable[[dns.message.Message, bool, Any], Awaitable[dns.message.Message]]


class DnsListenError(SailmeshError):
    """The DNS server could not bind its UDP and TCP port."""


@dataclass(frozen=True)
class ResolvConf:
    """The nameservers (host, port) and search domains a server forwards to and expands with."""

    servers: tuple[Server, ...] = ()
    search: tuple[str, ...] = ()


def read_resolv_conf(path: str = "/etc/resolv.conf") -> ResolvConf:
    """Nameservers (port 53) and the search list (the last `search`/`domain` line wins, as in resolv.conf(5))."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        log.warning("cannot read %s: %s; no upstream nameservers", path, e)
        return ResolvConf()
    servers: list[Server] = []
    search: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and _is_ip(parts[1]):
            servers.append((parts[1], 53))
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
    return ResolvConf(tuple(servers), tuple(search))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback(client: Any) -> bool:
    """Whether a client address ((host, port, ...) as asyncio gives it) is on a loopback interface."""
    try:
        return ipaddress.ip_address(str(client[0]).partition("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def servfail(query: dns.message.Message) -> dns.message.Message:
    """SERVFAIL for a query (no upstream answered, or nothing to answer with yet)."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response


def to_wire(response: dns.message.Message, limit: int) -> bytes:
    """The response's wire form within `limit` bytes; too big: the header and question with TC set."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = copy.copy(response)  # the caller's message stays whole
        truncated.answer, truncated.authority, truncated.additional = [], [], []
        truncated.flags |= dns.flags.TC
        return truncated.to_wire(max_size=limit)


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP response the client takes (its EDNS payload size, 512 without EDNS)."""
    return max(MIN_UDP_SIZE, query.payload if query.edns >= 0 else MIN_UDP_SIZE)


async def forward(query: dns.message.Message, servers: Sequence[Server], timeout: float, tcp: bool,
                  parallel: bool = False) -> dns.message.Message | None:
    """The first answer of the upstreams: one after the other (Istio's queryUpstream), or all at once with the first
    answer winning (queryUpstreamParallel); None when every one failed or timed out."""
    if parallel and len(servers) > 1:
        pending = [asyncio.ensure_future(ask(query, host, port, timeout, tcp)) for host, port in servers]
        try:
            for done in asyncio.as_completed(pending):
                answer = await done
                if answer is not None:
                    return answer
        finally:
            for task in pending:
                task.cancel()
        return None
    for host, port in servers:
        answer = await ask(query, host, port, timeout, tcp)
        if answer is not None:
            return answer
    return None


async def ask(query: dns.message.Message, host: str, port: int, timeout: float,
              tcp: bool) -> dns.message.Message | None:
    """One upstream's answer over UDP or TCP (None when it fails or does not answer within `timeout`)."""
    import dns.asyncquery

    try:
        if tcp:
            return await dns.asyncquery.tcp(query, host, timeout=timeout, port=port)
        return await dns.asyncquery.udp(query, host, timeout=timeout, port=port, ignore_unexpected=True)
    except (OSError, dns.exception.DNSException) as e:
        log.info("DNS upstream %s:%d failed: %s", host, port, e)
        return None


class Listener:
    """`resolve` served on host:port over UDP and TCP; each UDP query is answered in its own task."""

    def __init__(self, resolve: Resolve, name: str) -> None:
        self.resolve, self.name = resolve, name
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port, UDP and TCP (port 0: one free port for both); returns the port."""
        loop = asyncio.get_running_loop()
        for _ in range(20 if port == 0 else 1):
            transport, _p = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            bound = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound)
            except OSError as e:
                transport.close()
                if port:
                    raise DnsListenError(f"{self.name}: cannot listen on TCP {host}:{port}: {e}") from e
                continue
            self._udp, self.port = transport, bound
            return bound
        raise DnsListenError(f"{self.name}: no port free for both UDP and TCP on {host}")

    async def close(self) -> None:
        """Stop serving (pending answers are cancelled)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, data: bytes, addr: Any) -> None:
        task = asyncio.ensure_future(self._answer_udp(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            return  # not a DNS query: dropped, as a resolver does
        response = await self.resolve(query, False, addr)
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(to_wire(response, udp_limit(query)), addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")
        try:
            while True:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                query = dns.message.from_wire(await reader.readexactly(size))
                wire = to_wire(await self.resolve(query, True, client), MAX_TCP_SIZE)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.listener._spawn(data, addr)
