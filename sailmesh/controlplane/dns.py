"""The mesh's DNS server: A records for service hostnames (their endpoints' addresses) on a loopback UDP port.

Envoy resolves the hosts of STRICT_DNS / LOGICAL_DNS clusters itself; a cluster an EnvoyFilter adds (Istio's
global rate-limit sample points one at `ratelimit.default.svc.cluster.local:8081`) needs those names to resolve,
as Istio's DNS proxy makes them resolve in a pod. The agents list this server first in Envoy's resolvers, then
the system's: a name the mesh does not know is answered REFUSED, so Envoy's resolver (c-ares) asks the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sailmesh.snapshot.model import MeshSnapshot

log = logging.getLogger(__name__)

TTL = 5  # seconds: endpoints change; Envoy re-resolves at its dns_refresh_rate anyway


def addresses(snapshot: MeshSnapshot, name: str) -> list[str] | None:
    """The IPv4 addresses of a service hostname's healthy endpoints (all of them when none is healthy), sorted;
    None when the mesh has no such service."""
    host = name.rstrip(".").lower()
    if host not in snapshot.services:
        return None
    eps = [e for (h, _port), es in snapshot.endpoints.items() if h == host for e in es]
    healthy = [e for e in eps if e.healthy] or eps
    return sorted({e.address for e in healthy if e.address.count(".") == 3})


def answer(snapshot: MeshSnapshot, query: dns.message.Message) -> dns.message.Message:
    """The response to one query: A records for a mesh service, an empty answer for its other types, REFUSED for
    names outside the mesh (so the resolver asks the next server)."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    q = query.question[0]
    found = addresses(snapshot, q.name.to_text(omit_final_dot=True))
    if found is None:
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.REFUSED)
        return response
    if q.rdtype == dns.rdatatype.A and found:
        response.answer.append(dns.rrset.from_text_list(q.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, found))
    return response


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, current: Callable[[], MeshSnapshot | None]) -> None:
        self.current = current
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        snapshot = self.current()
        if snapshot is None or self.transport is None:
            return
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            return  # not a DNS query: no answer, as a resolver would drop it
        self.transport.sendto(answer(snapshot, query).to_wire(), addr)


class DnsServer:
    """Serves `answer` on host:port (UDP) for whatever snapshot `current` returns."""

    def __init__(self, current: Callable[[], MeshSnapshot | None]) -> None:
        self.current = current
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.current), local_addr=(host, port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        log.info("mesh DNS on %s:%d (udp)", host, self.port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
