"""The mesh's DNS server: A records for service hostnames (their endpoints' addresses), other names forwarded to the
system's nameservers; UDP and TCP on one loopback port.

Envoy resolves the hosts of STRICT_DNS / LOGICAL_DNS clusters itself; a cluster an EnvoyFilter adds (Istio's
global rate-limit sample points one at `ratelimit.default.svc.cluster.local:8081`) needs those names to resolve,
as Istio's DNS proxy makes them resolve in a pod. The agents give Envoy this server as its only resolver, so a name
outside the mesh is forwarded from here, as Istio's agent forwards (dnsio.forward: resolv.conf's nameservers one
after the other, the first answer passed through whatever its rcode, SERVFAIL when none answers). Envoy's resolver
(c-ares) orders its servers by their failures: with the system's nameservers listed after a server answering REFUSED
for other names, one lookup outside the mesh put the system's first, whose NXDOMAIN for a mesh name is final.
Only clients on loopback get forwarded answers (a server bound to another interface is no open resolver): others get
REFUSED for names outside the mesh.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sailmesh.dnsio import UPSTREAM_TIMEOUT_S, Listener, Server, forward, is_loopback, read_resolv_conf, servfail
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
    return sorted({e.address for e in healthy if _is_ipv4(e.address)})


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False  # a DNS endpoint's name


def answer(snapshot: MeshSnapshot, query: dns.message.Message) -> dns.message.Message | None:
    """The response to one query: A records for a mesh service, an empty answer for its other types; None for names
    outside the mesh (forwarded upstream)."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    q = query.question[0]
    found = addresses(snapshot, q.name.to_text(omit_final_dot=True))
    if found is None:
        return None
    if q.rdtype == dns.rdatatype.A and found:
        response.answer.append(dns.rrset.from_text_list(q.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, found))
    return response


def refused(query: dns.message.Message) -> dns.message.Message:
    """REFUSED: a name outside the mesh asked by a client this server does not forward for."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.REFUSED)
    return response


class DnsServer:
    """Serves `answer` for whatever snapshot `current` returns, on host:port (UDP and TCP), forwarding other names to
    `upstreams` (default: the nameservers of /etc/resolv.conf)."""

    def __init__(self, current: Callable[[], MeshSnapshot | None], upstreams: Sequence[Server] | None = None,
                 timeout: float = UPSTREAM_TIMEOUT_S) -> None:
        self.current, self.timeout = current, timeout
        self.upstreams: tuple[Server, ...] | None = tuple(upstreams) if upstreams is not None else None
        self._listener = Listener(self.resolve, "mesh DNS")
        self.port = 0
        self.forwarded = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0: one free port for UDP and TCP)."""
        if self.upstreams is None:
            self.upstreams = (await asyncio.to_thread(read_resolv_conf)).servers
        self.port = await self._listener.start(host, port)
        log.info("mesh DNS on %s:%d (udp, tcp); other names forwarded to %s for loopback clients", host, self.port,
                 ",".join(f"{h}:{p}" for h, p in self.upstreams or ()) or "none (SERVFAIL)")

    async def resolve(self, query: dns.message.Message, tcp: bool, client: Any) -> dns.message.Message:
        """The mesh's answer; for other names the upstreams' (loopback clients only), SERVFAIL when none answers.
        Before the first snapshot every query is SERVFAIL: which names are the mesh's is not known yet."""
        snapshot = self.current()
        if snapshot is None:
            return servfail(query)
        local = answer(snapshot, query)
        if local is not None:
            return local
        if not is_loopback(client):
            return refused(query)
        self.forwarded += 1
        forwarded = await forward(query, self.upstreams or (), self.timeout, tcp)
        return forwarded if forwarded is not None else servfail(query)

    async def close(self) -> None:
        """Stop serving."""
        await self._listener.close()
