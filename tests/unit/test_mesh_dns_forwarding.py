"""The mesh's DNS forwards the names it does not own (controlplane/dns.py over dnsio.forward), with in-process asyncio
upstreams on 127.0.0.1: answers and rcodes passed through, SERVFAIL when no upstream answers, REFUSED (no
forwarding) for clients off loopback, and the event loop free while an upstream is slow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from sailmesh.controlplane.dns import DnsServer
from sailmesh.dnsio import Server, is_loopback
from sailmesh.snapshot.model import MeshSnapshot
from tests.unit.test_generate_support import bookinfo

MESH_NAME = "reviews.default.svc.cluster.local."


class Upstream(asyncio.DatagramProtocol):
    """A nameserver (UDP; TCP with `serve_tcp`): `example.org.` -> 192.0.2.9, `slow.example.org.` the same after
    `delay`, `broken.example.` SERVFAIL, `silent.example.` no answer at all, anything else NXDOMAIN."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.transport: asyncio.DatagramTransport | None = None
        self.asked: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def respond(self, data: bytes, tcp: bool = False) -> tuple[bytes, float] | None:
        """The answer's wire form and its delay (None: no answer)."""
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text()
        self.asked.append(("tcp " if tcp else "") + name)
        if name == "silent.example.":
            return None
        response = dns.message.make_response(query)
        if name in ("example.org.", "slow.example.org."):
            response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.9"))
        else:
            response.set_rcode(dns.rcode.SERVFAIL if name == "broken.example." else dns.rcode.NXDOMAIN)
        return response.to_wire(), (self.delay if name == "slow.example.org." else 0.0)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.respond(data)
        if out is not None:
            asyncio.get_running_loop().call_later(out[1], lambda: self.transport.sendto(  # type: ignore[union-attr]
                out[0], addr))

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        out = self.respond(await reader.readexactly(size), tcp=True)
        if out is not None:
            writer.write(len(out[0]).to_bytes(2, "big") + out[0])
            await writer.drain()
        writer.close()


async def _with_server(body: Callable[[DnsServer, Upstream, int], Awaitable[Any]],
                       snapshot: MeshSnapshot | None = None, upstreams: list[Server] | None = None,
                       timeout: float = 2.0) -> Any:
    loop = asyncio.get_running_loop()
    for _ in range(20):  # a free UDP port whose TCP twin is free too
        transport, upstream = await loop.create_datagram_endpoint(lambda: Upstream(delay=1.0), ("127.0.0.1", 0))
        upstream_port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(upstream.serve_tcp, "127.0.0.1", upstream_port)
            break
        except OSError:
            transport.close()
    else:
        raise AssertionError("no port free for both UDP and TCP")
    snap = snapshot or bookinfo()
    mine = [("127.0.0.1", upstream_port)] if upstreams is None else upstreams
    server = DnsServer(lambda: snap, upstreams=mine, timeout=timeout)
    await server.start("127.0.0.1", 0)
    try:
        return await body(server, upstream, server.port)
    finally:
        await server.close()
        transport.close()
        tcp.close()


def _ask(name: str, port: int, tcp: bool = False) -> Awaitable[dns.message.Message]:
    query = dns.message.make_query(name, "A")
    if tcp:
        return dns.asyncquery.tcp(query, "127.0.0.1", timeout=3, port=port)
    return dns.asyncquery.udp(query, "127.0.0.1", timeout=3, port=port)


def _addresses(response: dns.message.Message) -> list[str]:
    return [rr.address for rrset in response.answer for rr in rrset]


def test_other_names_are_forwarded_and_the_upstreams_answer_passed_through() -> None:
    async def body(server: DnsServer, upstream: Upstream, port: int) -> None:
        mesh = await _ask(MESH_NAME, port)
        assert mesh.rcode() == dns.rcode.NOERROR and mesh.flags & dns.flags.AA and _addresses(mesh)
        assert upstream.asked == []  # the mesh's own names never go upstream
        other = await _ask("example.org", port)
        assert other.rcode() == dns.rcode.NOERROR and _addresses(other) == ["192.0.2.9"]
        assert not other.flags & dns.flags.AA  # the upstream's answer as it gave it
        assert (await _ask("example.org", port, tcp=True)).rcode() == dns.rcode.NOERROR  # TCP in, TCP upstream
        assert (await _ask("nowhere.invalid", port)).rcode() == dns.rcode.NXDOMAIN
        assert (await _ask("broken.example", port)).rcode() == dns.rcode.SERVFAIL  # the upstream's SERVFAIL
        assert upstream.asked == ["example.org.", "tcp example.org.", "nowhere.invalid.", "broken.example."]
        assert server.forwarded == 4

    asyncio.run(_with_server(body))


def test_servfail_when_no_upstream_answers() -> None:
    """An upstream that does not answer within the timeout, or none reachable (the discard port), or none at all."""
    async def silent(server: DnsServer, upstream: Upstream, port: int) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await _ask("silent.example", port)).rcode() == dns.rcode.SERVFAIL
        return loop.time() - started

    took = asyncio.run(_with_server(silent, timeout=0.3))
    assert 0.25 <= took < 2.0

    async def servfail(server: DnsServer, upstream: Upstream, port: int) -> None:
        assert (await _ask("example.org", port)).rcode() == dns.rcode.SERVFAIL

    asyncio.run(_with_server(servfail, upstreams=[("127.0.0.1", 9)], timeout=0.3))
    asyncio.run(_with_server(servfail, upstreams=[]))


def test_no_forwarding_for_clients_off_loopback() -> None:
    """Not an open resolver: a client on another interface (the server bound to one with `--host`) gets REFUSED for
    names outside the mesh, and the mesh's names as before."""
    async def body(server: DnsServer, upstream: Upstream, port: int) -> None:
        outside = await server.resolve(dns.message.make_query("example.org", "A"), False, ("10.0.0.5", 40000))
        assert outside.rcode() == dns.rcode.REFUSED and upstream.asked == []
        mesh = await server.resolve(dns.message.make_query(MESH_NAME, "A"), False, ("10.0.0.5", 40000))
        assert mesh.rcode() == dns.rcode.NOERROR and _addresses(mesh)
        v6 = await server.resolve(dns.message.make_query("example.org", "A"), False, ("::1", 40000, 0, 0))
        assert v6.rcode() == dns.rcode.NOERROR and upstream.asked == ["example.org."]

    asyncio.run(_with_server(body))
    assert is_loopback(("127.0.0.2", 1)) and is_loopback(("::1", 1, 0, 0))
    assert not is_loopback(("192.0.2.1", 1)) and not is_loopback(None) and not is_loopback(("name", 1))


def test_a_slow_upstream_does_not_hold_other_queries() -> None:
    """Forwarding awaits the upstream on the event loop: a mesh name asked meanwhile is answered at once."""
    async def body(server: DnsServer, upstream: Upstream, port: int) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.ensure_future(_ask("slow.example.org", port))
        await asyncio.sleep(0.05)
        assert (await _ask(MESH_NAME, port)).rcode() == dns.rcode.NOERROR
        fast = loop.time() - started
        assert _addresses(await slow) == ["192.0.2.9"]
        return fast, loop.time() - started

    fast, slow = asyncio.run(_with_server(body))
    assert fast < 0.5 <= 0.9 <= slow  # the upstream's delay is 1 s


def test_servfail_before_the_first_snapshot() -> None:
    async def body() -> dns.message.Message:
        server = DnsServer(lambda: None, upstreams=[])
        return await server.resolve(dns.message.make_query(MESH_NAME, "A"), False, ("127.0.0.1", 1))

    assert asyncio.run(body()).rcode() == dns.rcode.SERVFAIL
