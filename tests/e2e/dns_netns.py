"""Run as root in fresh network and mount namespaces (`unshare -n -m --propagation private python -m
tests.e2e.dns_netns -- istio-iptables ARGS`): the app's DNS to the resolver of /etc/resolv.conf lands on the agent's
DNS proxy (sailmesh/agent/dns.py, as UID/GID 1337 on 127.0.0.1:15053) through `sailmesh istio-iptables
--redirect-dns`, which answers mesh names from its name table and forwards the rest to that same resolver (its own
queries, as the proxy's UID, are not captured). The resolver 10.77.0.2 is a stub DNS server on a loopback alias.
One JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from sailmesh.agent.dns import DnsProxy
from sailmesh.dnsio import read_resolv_conf
from sailmesh.testing.netns_capture import fork_as_proxy
from sailmesh.xds.nds import NameTable

RESOLVER, AGENT_PORT = "10.77.0.2", 15053
SEARCH = "default.svc.cluster.local svc.cluster.local cluster.local"
MESH = {"reviews.default.svc.cluster.local": "10.96.0.10", "api.example.com": "240.0.0.1"}
OUTSIDE = "outside.test."


def _answer(data: bytes, seen: list[str], protocol: str) -> bytes:
    query = dns.message.from_wire(data)
    name = query.question[0].name.to_text()
    seen.append(f"{protocol} {name} {dns.rdatatype.to_text(query.question[0].rdtype)}")
    response = dns.message.make_response(query)
    if name == OUTSIDE and query.question[0].rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(OUTSIDE, 60, "IN", "A", "192.0.2.7"))
    elif name != OUTSIDE:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


def resolver(seen: list[str]) -> None:
    """The upstream resolver stand-in on RESOLVER:53, UDP and TCP."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((RESOLVER, 53))
    tcp = socket.create_server((RESOLVER, 53))

    def serve_udp() -> None:
        while True:
            data, addr = udp.recvfrom(4096)
            udp.sendto(_answer(data, seen, "udp"), addr)

    def serve_tcp() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                (size,) = struct.unpack("!H", conn.recv(2))
                wire = _answer(conn.recv(size), seen, "tcp")
                conn.sendall(struct.pack("!H", len(wire)) + wire)

    for fn in (serve_udp, serve_tcp):
        threading.Thread(target=fn, daemon=True).start()


def agent_dns() -> int:
    """The agent's DNS proxy in a child as UID/GID 1337 with a name table; returns its pid once it listens."""
    def run(ready: Callable[[], None]) -> None:
        async def serve() -> None:
            proxy = DnsProxy("default", "cluster.local", read_resolv_conf())
            table = NameTable()
            for host, ip in MESH.items():
                info = table.table[host]
                info.ips.append(ip)
                info.registry = "External" if "example" in host else "Kubernetes"
                if info.registry == "Kubernetes":
                    info.shortname, info.namespace = host.split(".")[0], "default"
            proxy.update(table)
            await proxy.start("127.0.0.1", AGENT_PORT)
            ready()
            await asyncio.Event().wait()

        asyncio.run(serve())

    return fork_as_proxy(run)


def _lookup(name: str) -> list[str] | str:
    try:
        return sorted({str(a[4][0]) for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def _query(name: str, tcp: bool) -> dict[str, Any]:
    q = dns.message.make_query(name, "A")
    try:
        # dnspython's UDP query refuses an answer from another address than it asked: the NAT was undone
        r = dns.query.tcp(q, RESOLVER, timeout=5) if tcp else dns.query.udp(q, RESOLVER, timeout=5)
        return {"answer": sorted(x.to_text() for rr in r.answer if rr.rdtype == 1 for x in rr),
                "aa": bool(r.flags & dns.flags.AA)}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main(iptables_args: list[str]) -> dict[str, Any]:
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, timeout=20)  # noqa: E731
    run("ip", "link", "set", "lo", "up")
    run("ip", "addr", "add", f"{RESOLVER}/32", "dev", "lo")
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as f:
        f.write(f"nameserver {RESOLVER}\nsearch {SEARCH}\noptions ndots:5 attempts:1 timeout:3\n")
    os.chmod(f.name, 0o644)
    run("mount", "--bind", f.name, "/etc/resolv.conf")
    seen: list[str] = []
    resolver(seen)
    pid = agent_dns()
    out: dict[str, Any] = {}
    try:
        applied = subprocess.run([sys.executable, "-m", "sailmesh", *iptables_args], capture_output=True, text=True,
                                 timeout=60)
        out["iptables_rc"], out["iptables_stderr"] = applied.returncode, applied.stderr[-2000:]
        if applied.returncode:
            return out
        # the app's resolver (glibc: search list, ndots) asks RESOLVER; the capture sends it to the agent
        out["getaddrinfo"] = {n: _lookup(n) for n in ("reviews", "reviews.default", "api.example.com",
                                                      "outside.test")}
        out["udp"] = _query("reviews.default.svc.cluster.local.", tcp=False)
        out["tcp"] = _query("api.example.com.", tcp=True)
        time.sleep(0.1)
        out["resolver_saw"] = list(seen)
        return out
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[1:] if args and args[0] == "--" else args)), flush=True)
