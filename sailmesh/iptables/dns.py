"""Istio's DNS capture rules (run.go's SetupDNSRedir and addDNSConntrackZones) and the resolvers it reads.

With `--redirect-dns` (Istio's ISTIO_META_DNS_CAPTURE), the app's DNS queries to the pod's resolvers (the
nameservers of /etc/resolv.conf; every port-53 destination with `--capture-all-dns`), UDP and TCP, are redirected
to the agent's DNS proxy on 15053. The proxy's own queries (its UID/GID) are not: they return earlier in
ISTIO_OUTPUT. In the raw table the queries are split into two conntrack zones, so the app -> agent and agent ->
resolver flows (same ports) never share a UDP conntrack entry: the proxy's upstream queries and the replies from
the resolvers are zone 1, the app's queries and the agent's answers (source port 15053) zone 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from sailmesh.iptables.builder import RuleBuilder

OUTPUT_DNS, INBOUND, OUTPUT = "ISTIO_OUTPUT_DNS", "ISTIO_INBOUND", "ISTIO_OUTPUT"
AGENT_DNS_PORT = "15053"  # Istio's IstioAgentDNSListenerPort
RESOLV_CONF = "/etc/resolv.conf"


def resolvers(path: str = RESOLV_CONF) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The `nameserver` addresses of resolv.conf split into IPv4 and IPv6 (Istio: dns.ClientConfigFromFile, then
    IPsSplitV4V6); an unreadable file is an OSError, as Istio fails on it."""
    v4: list[str] = []
    v6: list[str] = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            (v4 if addr.version == 4 else v6).append(words[1])
    return tuple(v4), tuple(v6)


def setup(b: RuleBuilder, uids: list[str], gids: list[str], servers_v4: tuple[str, ...],
          servers_v6: tuple[str, ...], capture_all: bool) -> None:
    """SetupDNSRedir: the nat redirects to 15053 and the raw conntrack zones, in Istio's order."""
    b.append("OUTPUT", "raw", "-j", OUTPUT_DNS)
    if capture_all or servers_v4:
        b.append_v4(OUTPUT, "nat", "-j", OUTPUT_DNS)
    if capture_all or servers_v6:
        b.append_v6(OUTPUT, "nat", "-j", OUTPUT_DNS)
    # TCP first (`--to-ports`), then UDP (`--to-port`: Istio's spelling, the same option)
    for proto, to in (("tcp", "--to-ports"), ("udp", "--to-port")):
        if capture_all:
            b.append(OUTPUT_DNS, "nat", "-p", proto, "--dport", "53", "-j", "REDIRECT", to, AGENT_DNS_PORT)
            continue
        for s in servers_v4:
            b.append_v4(OUTPUT_DNS, "nat", "-p", proto, "--dport", "53", "-d", f"{s}/32", "-j", "REDIRECT",
                        to, AGENT_DNS_PORT)
        for s in servers_v6:
            b.append_v6(OUTPUT_DNS, "nat", "-p", proto, "--dport", "53", "-d", f"{s}/128", "-j", "REDIRECT",
                        to, AGENT_DNS_PORT)
    _conntrack_zones(b, uids, gids, servers_v4, servers_v6, capture_all)


def _conntrack_zones(b: RuleBuilder, uids: list[str], gids: list[str], servers_v4: tuple[str, ...],
                     servers_v6: tuple[str, ...], capture_all: bool) -> None:
    """addDNSConntrackZones: the proxy's upstream queries zone 1, its answers to the app (sport 15053) zone 2."""
    for flag, ids in (("--uid-owner", uids), ("--gid-owner", gids)):
        for owner in ids:
            b.append(OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-m", "owner", flag, owner,
                     "-j", "CT", "--zone", "1")
            b.append(OUTPUT_DNS, "raw", "-p", "udp", "--sport", AGENT_DNS_PORT, "-m", "owner", flag, owner,
                     "-j", "CT", "--zone", "2")
    if capture_all:
        b.append("PREROUTING", "raw", "-j", INBOUND)
        b.append(OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2")
        b.append(INBOUND, "raw", "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        return
    if servers_v4:
        b.append_v4("PREROUTING", "raw", "-j", INBOUND)
    for s in servers_v4:
        b.append_v4(OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-d", f"{s}/32", "-j", "CT", "--zone", "2")
        b.append_v4(INBOUND, "raw", "-p", "udp", "--sport", "53", "-s", f"{s}/32", "-j", "CT", "--zone", "1")
    if servers_v6:
        b.append_v6("PREROUTING", "raw", "-j", INBOUND)
    for s in servers_v6:
        b.append_v6(OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-d", f"{s}/128", "-j", "CT", "--zone", "2")
        b.append_v6(INBOUND, "raw", "-p", "udp", "--sport", "53", "-s", f"{s}/128", "-j", "CT", "--zone", "1")
