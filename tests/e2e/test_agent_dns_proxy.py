"""The agent's DNS proxy end to end (Istio's DNS proxying): a real control plane sends the name table over its mTLS
port, a real agent (with Envoy) answers real DNS queries over UDP and TCP on loopback, and forwards other names to a
real upstream DNS server (a stub in the test, standing in for resolv.conf's nameserver)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from sailmesh.agent.config import AgentConfig
from sailmesh.agent.main import run_agent
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import free_port, free_port_both
from sailmesh.settings import Settings
from sailmesh.testing.waiting import await_for, random_loopback_block

pytestmark = pytest.mark.e2e

OUTSIDE = "outside.test."  # only the upstream knows it


class StubUpstream:
    """A DNS server on loopback (UDP and TCP, one port): `outside.test.` A 192.0.2.7, NXDOMAIN for the rest."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (protocol, name)
        self.port = 0
        self._udp: Any = None
        self._tcp: asyncio.Server | None = None

    def answer(self, data: bytes, protocol: str) -> bytes:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text()
        self.seen.append((protocol, name))
        response = dns.message.make_response(query)
        if name == OUTSIDE:
            response.answer.append(dns.rrset.from_text(OUTSIDE, 60, "IN", "A", "192.0.2.7"))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    async def start(self) -> None:
        stub = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(stub.answer(data, "udp"), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = stub.answer(await reader.readexactly(size), "tcp")
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
            writer.close()

        loop = asyncio.get_running_loop()
        for _ in range(20):  # one port free for both protocols
            self._udp, _p = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(tcp, "127.0.0.1", self.port)
                return
            except OSError:
                self._udp.close()
        raise AssertionError("no port free for both UDP and TCP")

    def close(self) -> None:
        self._udp.close()
        if self._tcp is not None:
            self._tcp.close()


@pytest.fixture
async def control_plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ControlPlaneOptions(xds_port=0, xds_tls_port=0, ca_port=0, http_port=free_port(),
                                          state_dir=str(tmp_path / "cp")), Settings())
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "reviews"},
                    "ports": [{"name": "http", "port": 9080}]}}


def service_entry(name: str, host: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": [host], "addresses": [address], "location": "MESH_EXTERNAL", "resolution": "DNS",
                     "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]}}


async def query(port: int, name: str, tcp: bool, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=5)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in response.answer if rrset.rdtype == 1 for r in rrset)


async def test_agent_answers_mesh_names_and_forwards_the_rest(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    assert cp.identity is not None
    docs = [SERVICE, service_entry("api", "api.example.com", "240.0.0.1")]
    outcome = await cp.apply_documents([{"doc": d} for d in docs])
    assert not outcome.errors, outcome.errors
    async with aiohttp.ClientSession(trust_env=False) as s:
        async with s.post(f"http://127.0.0.1:{cp.opts.http_port}/api/v1/join-tokens",
                          json={"namespace": "default", "serviceAccount": "sleep"},
                          headers={"Authorization": f"Bearer {cp.identity.api_token}"}) as r:
            token = (await r.json())["token"]
    state_dir = Path(tempfile.mkdtemp(prefix="smdns"))  # short: the SDS socket path must fit in sun_path
    token_file = state_dir / "join-token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
                      "options ndots:5\n")
    upstream = StubUpstream()
    await upstream.start()
    dns_port = free_port_both()  # the proxy listens on both: CI once found this port's TCP side taken
    cfg = AgentConfig(ip=f"{random_loopback_block()}.2", name="sleep-0", namespace="default",
                      service_account="sleep", xds_port=cp.opts.xds_tls_port, xds_tls=True,
                      ca_address=f"127.0.0.1:{cp.opts.ca_port}", ca_root_file=str(cp.identity.root_cert_path),
                      token_file=str(token_file), admin_port=free_port(), stats_port=free_port(),
                      health_port=free_port(), status_port=free_port(), drain_seconds=0,
                      dns_capture=True, dns_proxy_address=f"127.0.0.1:{dns_port}",
                      dns_upstreams=f"127.0.0.1:{upstream.port}", resolv_conf=str(resolv))
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(cfg, state_dir, stop))
    try:
        async def resolved(name: str, want: list[str], tcp: bool = False) -> dns.message.Message | None:
            if agent.done():
                agent.result()
            with contextlib.suppress(OSError, dns.exception.DNSException):
                response = await query(dns_port, name, tcp)
                return response if addresses(response) == want else None
            return None

        # The name table arrives over the control plane's mTLS port (the node bound to the certificate)
        r = await await_for(lambda: resolved("reviews.default.svc.cluster.local.", ["10.96.0.10"]), timeout=60,
                            what="the agent to answer a mesh name from its name table")
        assert r.flags & dns.flags.AA and r.answer[0].ttl == 30  # authoritative, Istio's 30 s TTL
        for tcp in (False, True):
            for name in ("reviews.", "reviews.default.", "reviews.default.svc."):  # short names, same namespace
                assert addresses(await query(dns_port, name, tcp)) == ["10.96.0.10"], (name, tcp)
            r = await query(dns_port, "api.example.com.default.svc.cluster.local.", tcp)  # first search domain
            assert [x.rdtype for x in r.answer] == [5, 1] and addresses(r) == ["240.0.0.1"]  # CNAME + A
            r = await query(dns_port, "api.example.com.", tcp, "AAAA")
            assert r.rcode() == dns.rcode.NOERROR and not r.answer  # known, no IPv6: NOERROR, no NXDOMAIN
        assert upstream.seen == []  # nothing so far left the proxy

        # Anything else goes to the upstream, over the protocol it came in on, and comes back as it was
        for tcp in (False, True):
            assert addresses(await query(dns_port, OUTSIDE, tcp)) == ["192.0.2.7"]
            assert (await query(dns_port, "nope.test.", tcp)).rcode() == dns.rcode.NXDOMAIN
        assert upstream.seen == [("udp", OUTSIDE), ("udp", "nope.test."), ("tcp", OUTSIDE), ("tcp", "nope.test.")]
        # Istio's agent DNS metrics on the merged page (an NXDOMAIN from upstream is an answer, not a failure)
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"http://{cfg.ip}:{cfg.status_port}/stats/prometheus", timeout=10).read().decode())
        assert "istio_agent_dns_upstream_requests_total 4.0" in page, page[-3000:]
        assert "istio_agent_dns_upstream_failures_total 0.0" in page
        assert "istio_agent_dns_upstream_request_duration_seconds_count 4.0" in page

        # A new ServiceEntry reaches the running proxy's table (the stream pushes each change)
        outcome = await cp.apply_documents([{"doc": service_entry("new", "new.example.com", "240.0.0.9")}])
        assert not outcome.errors, outcome.errors
        await await_for(lambda: resolved("new.example.com.", ["240.0.0.9"], tcp=True), timeout=30,
                        what="a new ServiceEntry host in the agent's DNS answers")
        assert cp.names.streams == 1
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent, 30)
        upstream.close()
        shutil.rmtree(state_dir, ignore_errors=True)
