"""The rules Istio's istio-iptables installs in a pod's network namespace, as `iptables-restore` input.

Pure: a CaptureConfig (istio-iptables' flags and what it reads from the pod) in, rules out. The tables, chains,
their names and the order of the rules follow Istio's tools/istio-iptables/pkg/capture/run.go and its golden files:

- nat ISTIO_INBOUND (from PREROUTING): the tunnel port (15008) and the excluded inbound ports return, the included
  ports (or every port, `-b '*'`) jump to ISTIO_IN_REDIRECT, which redirects to the inbound capture port (15006);
- nat ISTIO_OUTPUT (from OUTPUT): excluded outbound ports return; the sidecar's own traffic (UID/GID 1337) returns,
  except that the sidecar calling its own pod through lo goes inbound (ISTIO_IN_REDIRECT); the app calling its own
  pod address through lo returns; 127.0.0.1 returns; excluded ranges return; then included ports and ranges (or
  everything, `-i '*'`) jump to ISTIO_REDIRECT, which redirects to the outbound port (15001);
- DNS capture (`--redirect-dns`, Istio's ISTIO_META_DNS_CAPTURE; dns.py): port 53 to the agent's 15053;
- TPROXY interception (`-m TPROXY`; tproxy.py): inbound through the mangle table instead of nat REDIRECT;
- IPv6 (when the pod has an IPv6 address, or `--dual-stack`): the same rules for ip6tables with ::1, ::6 and the
  IPv6 ranges, as Istio's builder writes them.

Owner-group filters and invalid-packet drop are not implemented: their settings are refused, not ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sailmesh.errors import CaptureError
from sailmesh.iptables import dns, tproxy
from sailmesh.iptables.builder import VERSIONED, RuleBuilder, restore_text

# Istio's chain names (tools/istio-iptables/pkg/constants)
INBOUND, REDIRECT, IN_REDIRECT, OUTPUT = "ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"
# the inbound passthrough cluster binds this source address when it connects to the app (Istio's InboundPassthrough)
PASSTHROUGH_SOURCE, PASSTHROUGH_SOURCE_V6 = "127.0.0.6/32", "::6/128"
LOCALHOST_V6 = "::1/128"
MULTIPORT_MAX = 15  # the kernel's multiport match takes at most 15 ports


@dataclass(frozen=True)
class CaptureConfig:
    """istio-iptables' settings (its flag in brackets); lists are comma-separated strings as on its command line."""

    proxy_port: str = "15001"  # -p: where outbound traffic goes
    inbound_capture_port: str = "15006"  # -z: where inbound traffic goes
    inbound_tunnel_port: str = "15008"  # -e: HBONE tunnel, never captured
    proxy_uid: str = "1337"  # -u: the sidecar's UID(s): its traffic is not captured
    proxy_gid: str = ""  # -g: the sidecar's GID(s); "" = the UIDs' values (Istio's default)
    interception_mode: str = "REDIRECT"  # -m: REDIRECT or TPROXY
    tproxy_mark: str = "1337"  # -t: TPROXY mode's packet mark
    tproxy_route_table: str = "133"  # -r: TPROXY mode's routing table
    outbound_ip_ranges_include: str = ""  # -i: "*" or CIDRs
    outbound_ip_ranges_exclude: str = ""  # -x
    inbound_ports_include: str = ""  # -b: "*" or ports; "" captures no inbound traffic
    inbound_ports_exclude: str = ""  # -d
    outbound_ports_include: str = ""  # -q
    outbound_ports_exclude: str = ""  # -o
    kube_virt_interfaces: str = ""  # -k
    exclude_interfaces: str = ""  # -c
    redirect_dns: bool = False  # --redirect-dns (env REDIRECT_DNS or ISTIO_META_DNS_CAPTURE)
    capture_all_dns: bool = False  # --capture-all-dns: every port-53 destination, not only the resolvers
    dns_servers_v4: tuple[str, ...] = ()  # /etc/resolv.conf's nameservers (read when redirect_dns)
    dns_servers_v6: tuple[str, ...] = ()
    enable_ipv6: bool = False  # the pod has an IPv6 address (Istio's EnableIPv6; see cli: detection, --dual-stack)
    host_ipv4_loopback_cidr: str = "127.0.0.1/32"  # env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR


@dataclass
class RuleSet:
    """Both families' rules (Istio's builder), the routing commands TPROXY needs, and notes for the operator."""

    built: RuleBuilder
    routes: list[list[str]] = field(default_factory=list)  # `ip` argument lists, run after the rules
    notes: list[str] = field(default_factory=list)  # what was skipped, for the operator (stderr)

    @property
    def ipv6(self) -> bool:
        return self.built.ipv6

    @property
    def rules(self) -> list[str]:
        """The IPv4 nat table's rules in order (each an iptables argument string after `-t nat`)."""
        return [r.text() for r in self.built.v4 if r.table == "nat"]

    def table(self, table: str, family: int = 4) -> list[str]:
        """One table's rules of one family, in order."""
        return [r.text() for r in (self.built.v4 if family == 4 else self.built.v6) if r.table == table]

    def restore_text(self, family: int = 4) -> str:
        """The `iptables-restore --noflush` (family 4) or `ip6tables-restore --noflush` (6) input."""
        return restore_text(self.built.v4 if family == 4 else self.built.v6)

    def dry_run_text(self) -> str:
        """What `--dry-run` prints: the IPv4 input, the IPv6 input and the routing commands (as comments)."""
        text = self.restore_text(4)
        if self.ipv6:
            text += "# ip6tables-restore --noflush\n" + self.restore_text(6)
        return text + "".join(f"# ip {' '.join(r)}\n" for r in self.routes)


def split(value: str) -> list[str]:
    """istio-iptables' list split: comma-separated, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]


def _ports(value: str, flag: str, wildcard: bool = False) -> list[str]:
    out = split(value)
    if wildcard and out == ["*"]:
        return out
    for p in out:
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise CaptureError(f"{flag}: {p!r} is not a port (1-65535)")
    return out


def _port(value: str, flag: str) -> str:
    ports = _ports(value, flag)
    if len(ports) != 1:
        raise CaptureError(f"{flag}: expected one port, got {value!r}")
    return ports[0]


@dataclass
class _Ranges:
    wildcard: bool = False
    nets: list[str] = field(default_factory=list)
    has_loopback: bool = False


def _ranges(value: str, flag: str, notes: list[str], ipv6: bool) -> tuple[_Ranges, _Ranges]:
    """Istio's SeparateV4V6: the IPv4 and the IPv6 ranges ('*' is a wildcard for both)."""
    if value.strip() == "*":
        return _Ranges(wildcard=True), _Ranges(wildcard=True)
    v4, v6 = _Ranges(), _Ranges()
    for item in split(value):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            notes.append(f"{flag}: ignoring {item!r}: not a CIDR")
            continue
        out = v4 if net.version == 4 else v6
        if net.version == 6 and not ipv6:
            notes.append(f"{flag}: IPv6 range {item} unused: IPv6 capture is off (the pod has no IPv6 address; "
                         "--dual-stack)")
        # Istio checks the address as written (netip.ParsePrefix's Addr), not the network
        out.has_loopback = out.has_loopback or ipaddress.ip_interface(item).ip.is_loopback
        out.nets.append(str(net))
    return v4, v6


def multiport(ports: list[str]) -> list[tuple[str, ...]]:
    """Istio's appendMultiportRules: `--dport P` for one port, `-m multiport --dports a,b,...` (15 at most) for
    several, a chunk of one as `--dport`."""
    chunks = [ports[i:i + MULTIPORT_MAX] for i in range(0, len(ports), MULTIPORT_MAX)]
    return [("--dport", c[0]) if len(c) == 1 else ("-m", "multiport", "--dports", ",".join(c)) for c in chunks]


def _ids(value: str, flag: str) -> list[str]:
    ids = split(value)
    if not all(i.isdigit() for i in ids):
        raise CaptureError(f"{flag}: expected numeric IDs, got {','.join(ids)!r}")
    return ids


def build(cfg: CaptureConfig) -> RuleSet:
    """The rules istio-iptables installs for `cfg`, in its order (run.go's Run)."""
    if cfg.interception_mode not in ("REDIRECT", "TPROXY"):
        raise CaptureError(f"-m {cfg.interception_mode}: expected REDIRECT or TPROXY")
    tproxy_mode = cfg.interception_mode == "TPROXY"
    b = RuleBuilder(ipv6=cfg.enable_ipv6)
    out = RuleSet(b)
    proxy_port = _port(cfg.proxy_port, "-p")
    inbound_port = _port(cfg.inbound_capture_port, "-z")
    tunnel_port = _port(cfg.inbound_tunnel_port, "-e")
    uids = _ids(cfg.proxy_uid, "-u")
    gids = _ids(cfg.proxy_gid, "-g") if cfg.proxy_gid.strip() else uids
    exclude4, exclude6 = _ranges(cfg.outbound_ip_ranges_exclude, "-x", out.notes, cfg.enable_ipv6)
    if exclude4.wildcard:
        raise CaptureError("-x: '*' is not a valid value for the excluded outbound ranges")
    include4, include6 = _ranges(cfg.outbound_ip_ranges_include, "-i", out.notes, cfg.enable_ipv6)
    inbound_include = _ports(cfg.inbound_ports_include, "-b", wildcard=True)
    inbound_exclude = _ports(cfg.inbound_ports_exclude, "-d")
    outbound_include = _ports(cfg.outbound_ports_include, "-q")
    outbound_exclude = _ports(cfg.outbound_ports_exclude, "-o")
    virt = split(cfg.kube_virt_interfaces)
    excluded_ifaces = split(cfg.exclude_interfaces)
    loopback = cfg.host_ipv4_loopback_cidr
    redirect_dns = cfg.redirect_dns
    if redirect_dns and not cfg.capture_all_dns and not cfg.dns_servers_v4 and not cfg.dns_servers_v6:
        out.notes.append("REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. "
                         "DNS capture disabled.")  # Istio's warning, word for word
        redirect_dns = False
    # ConfigureRoutes (after the rules): ::6 on lo for the IPv6 passthrough source, then TPROXY's policy routing
    out.routes = [["-6", "addr", "add", PASSTHROUGH_SOURCE_V6, "dev", "lo"]] if cfg.enable_ipv6 else []
    if tproxy_mode:
        out.routes += tproxy.routes(cfg, bool(inbound_include))

    for iface in excluded_ifaces:  # shortCircuitExcludeInterfaces
        b.append("PREROUTING", "nat", "-i", iface, "-j", "RETURN")
        b.append("OUTPUT", "nat", "-o", iface, "-j", "RETURN")
    if tproxy_mode:
        for iface in excluded_ifaces:
            b.append("PREROUTING", "mangle", "-i", iface, "-j", "RETURN")
            b.append("OUTPUT", "mangle", "-o", iface, "-j", "RETURN")
    for iface in virt:  # shortCircuitKubeInternalInterface
        b.insert("PREROUTING", "nat", 1, "-i", iface, "-j", "RETURN")
    b.append(INBOUND, "nat", "-p", "tcp", "--dport", tunnel_port, "-j", "RETURN")
    b.append(REDIRECT, "nat", "-p", "tcp", "-j", "REDIRECT", "--to-ports", proxy_port)
    b.append(IN_REDIRECT, "nat", "-p", "tcp", "-j", "REDIRECT", "--to-ports", inbound_port)

    # inbound (handleInboundPortsInclude): nothing is captured without -b
    if inbound_include:
        table = "mangle" if tproxy_mode else "nat"
        if tproxy_mode:
            tproxy.divert_chains(b, cfg, loopback, inbound_port)
        b.append("PREROUTING", table, "-p", "tcp", "-j", INBOUND)
        if inbound_include == ["*"]:
            for match in multiport(inbound_exclude):
                b.append(INBOUND, table, "-p", "tcp", *match, "-j", "RETURN")
            if tproxy_mode:
                tproxy.inbound(b, ())
            else:
                b.append(INBOUND, "nat", "-p", "tcp", "-j", IN_REDIRECT)
        else:
            for port in inbound_include:
                if tproxy_mode:
                    tproxy.inbound(b, ("--dport", port))
                else:
                    b.append(INBOUND, "nat", "-p", "tcp", "--dport", port, "-j", IN_REDIRECT)

    # outbound
    b.append("OUTPUT", "nat", "-j", OUTPUT)
    for proto in ("tcp", "udp") if outbound_exclude else ():
        for match in multiport(outbound_exclude):
            b.append(OUTPUT, "nat", "-p", proto, *match, "-j", "RETURN")
    b.append_versioned(PASSTHROUGH_SOURCE, PASSTHROUGH_SOURCE_V6, OUTPUT, "nat", "-o", "lo", "-s", VERSIONED,
                       "-j", "RETURN")
    keep_lo_return = not include4.has_loopback and not include6.has_loopback
    for flag, ids in (("--uid-owner", uids), ("--gid-owner", gids)):
        for owner in ids:
            # the sidecar calling its own pod's address (a service VIP resolved to itself) goes in through Envoy;
            # with DNS capture the agent's own port-53 TCP does not (Istio: UIDs only, the GID rule keeps 15008)
            if redirect_dns and flag == "--uid-owner":
                ports: tuple[str, ...] = ("-m", "multiport", "!", "--dports", f"53,{tunnel_port}")
            else:
                ports = ("!", "--dport", tunnel_port)
            b.append_versioned(loopback, LOCALHOST_V6, OUTPUT, "nat", "-o", "lo", "!", "-d", VERSIONED, "-p", "tcp",
                               *ports, "-m", "owner", flag, owner, "-j", IN_REDIRECT)
            if keep_lo_return:
                # the app calling its own pod address over lo is not captured (unless -i names a loopback range);
                # with DNS capture its TCP to a resolver on localhost still is
                dns53 = ("-p", "tcp", "!", "--dport", "53") if redirect_dns else ()
                b.append(OUTPUT, "nat", "-o", "lo", *dns53, "-m", "owner", "!", flag, owner, "-j", "RETURN")
            # the sidecar's own outbound traffic is never captured (no loop)
            b.append(OUTPUT, "nat", "-m", "owner", flag, owner, "-j", "RETURN")
    if redirect_dns:
        dns.setup(b, uids, gids, cfg.dns_servers_v4, cfg.dns_servers_v6, cfg.capture_all_dns)
    b.append_versioned(loopback, LOCALHOST_V6, OUTPUT, "nat", "-d", VERSIONED, "-j", "RETURN")
    for net in exclude4.nets:
        b.append_v4(OUTPUT, "nat", "-d", net, "-j", "RETURN")
    for net in exclude6.nets:
        b.append_v6(OUTPUT, "nat", "-d", net, "-j", "RETURN")
    for port in outbound_include:
        b.append(OUTPUT, "nat", "-p", "tcp", "--dport", port, "-j", REDIRECT)
    for include, append, insert in ((include4, b.append_v4, b.insert_v4), (include6, b.append_v6, b.insert_v6)):
        if include.wildcard:
            append(OUTPUT, "nat", "-j", REDIRECT)
            for iface in virt:
                insert("PREROUTING", "nat", 1, "-i", iface, "-j", REDIRECT)
        for net in include.nets:
            for iface in virt:
                insert("PREROUTING", "nat", 1, "-i", iface, "-d", net, "-j", REDIRECT)
            append(OUTPUT, "nat", "-d", net, "-j", REDIRECT)
    if tproxy_mode:
        tproxy.marks(b, cfg, uids, gids, loopback)
    return out
