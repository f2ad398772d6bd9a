"""The nat rules Istio's istio-iptables installs in a pod's network namespace, as `iptables-restore` input.

Pure: a CaptureConfig (istio-iptables' flags) in, rule text out. The chains, their names and the order of the
rules follow istio-iptables' REDIRECT mode (tools/istio-iptables/pkg/capture/run.go and its golden files):

- ISTIO_INBOUND (from PREROUTING): the tunnel port (15008) and the excluded inbound ports return, the included
  ports (or every port, `-b '*'`) jump to ISTIO_IN_REDIRECT, which redirects to the inbound capture port (15006);
- ISTIO_OUTPUT (from OUTPUT): excluded outbound ports return; the sidecar's own traffic (UID/GID 1337) returns,
  except that the sidecar calling its own pod through lo goes inbound (ISTIO_IN_REDIRECT); the app calling its own
  pod address through lo returns; 127.0.0.1 returns; excluded ranges return; then included ports and ranges (or
  everything, `-i '*'`) jump to ISTIO_REDIRECT, which redirects to the outbound port (15001).

IPv4 only (Istio adds ip6tables rules when the pod has IPv6 addresses); IPv6 ranges are reported and skipped.
Istio's DNS capture (`--redirect-dns`), owner-group filters and TPROXY mode are not implemented: their flags are
refused rather than ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sailmesh.errors import CaptureError

# Istio's chain names (tools/istio-iptables/pkg/constants)
INBOUND, REDIRECT, IN_REDIRECT, OUTPUT = "ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"
# the inbound passthrough cluster binds this source address when it connects to the app (Istio's InboundPassthrough)
PASSTHROUGH_SOURCE = "127.0.0.6/32"
LOCALHOST = "127.0.0.1/32"
MULTIPORT_MAX = 15  # the kernel's multiport match takes at most 15 ports


@dataclass(frozen=True)
class CaptureConfig:
    """istio-iptables' settings (its flag in brackets); lists are comma-separated strings as on its command line."""

    proxy_port: str = "15001"  # -p: where outbound traffic goes
    inbound_capture_port: str = "15006"  # -z: where inbound traffic goes
    inbound_tunnel_port: str = "15008"  # -e: HBONE tunnel, never captured
    proxy_uid: str = "1337"  # -u: the sidecar's UID(s): its traffic is not captured
    proxy_gid: str = ""  # -g: the sidecar's GID(s); "" = the UIDs' values (Istio's default)
    interception_mode: str = "REDIRECT"  # -m
    outbound_ip_ranges_include: str = ""  # -i: "*" or CIDRs
    outbound_ip_ranges_exclude: str = ""  # -x
    inbound_ports_include: str = ""  # -b: "*" or ports; "" captures no inbound traffic
    inbound_ports_exclude: str = ""  # -d
    outbound_ports_include: str = ""  # -q
    outbound_ports_exclude: str = ""  # -o
    kube_virt_interfaces: str = ""  # -k
    exclude_interfaces: str = ""  # -c


@dataclass
class RuleSet:
    """The nat table's rules in order (each an iptables argument string after `-t nat`), plus notes."""

    rules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped, for the operator (stderr)

    def append(self, chain: str, *args: str) -> None:
        self.rules.append(" ".join(("-A", chain, *args)))

    def insert(self, chain: str, position: int, *args: str) -> None:
        self.rules.append(" ".join(("-I", chain, str(position), *args)))

    def chains(self) -> list[str]:
        """Istio's chains in the order the rules first name them (what `-N` creates)."""
        seen: list[str] = []
        for rule in self.rules:
            for word in rule.split():
                if word.startswith("ISTIO_") and word not in seen:
                    seen.append(word)
        return seen

    def restore_text(self) -> str:
        """The `iptables-restore --noflush` input: create Istio's chains, then the rules, in one commit."""
        lines = ["* nat", *(f"-N {c}" for c in self.chains()), *self.rules, "COMMIT"]
        return "\n".join(lines) + "\n"

    def commands(self) -> list[str]:
        """The same rules as `iptables` commands (istio-iptables' dry-run log form)."""
        return [f"iptables -t nat -N {c}" for c in self.chains()] + [f"iptables -t nat {r}" for r in self.rules]


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


def _ranges(value: str, flag: str, notes: list[str]) -> _Ranges:
    if value.strip() == "*":
        return _Ranges(wildcard=True)
    out = _Ranges()
    for item in split(value):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            # istio-iptables prints and skips what it cannot parse ("bug compatibility with istio-iptables.sh")
            notes.append(f"{flag}: ignoring {item!r}: not a CIDR")
            continue
        if net.version == 6:
            notes.append(f"{flag}: skipping IPv6 range {item} (IPv4 rules only)")
            continue
        # Istio checks the address as written (net.ParseCIDR's IP), not the network
        out.has_loopback = out.has_loopback or ipaddress.ip_interface(item).ip.is_loopback
        out.nets.append(str(net))
    return out


def _port_match(ports: list[str]) -> list[tuple[str, ...]]:
    """`--dport P` for one port, `-m multiport --dports a,b,...` (at most 15 each) for several, as Istio."""
    if len(ports) == 1:
        return [("--dport", ports[0])]
    return [("-m", "multiport", "--dports", ",".join(ports[i:i + MULTIPORT_MAX]))
            for i in range(0, len(ports), MULTIPORT_MAX)]


def build(cfg: CaptureConfig) -> RuleSet:
    """The rules istio-iptables installs for `cfg` (REDIRECT mode), in its order."""
    if cfg.interception_mode != "REDIRECT":
        raise CaptureError(f"-m {cfg.interception_mode}: only REDIRECT interception is implemented "
                           "(Istio's TPROXY mode is not)")
    out = RuleSet()
    proxy_port = _port(cfg.proxy_port, "-p")
    inbound_port = _port(cfg.inbound_capture_port, "-z")
    tunnel_port = _port(cfg.inbound_tunnel_port, "-e")
    uids = split(cfg.proxy_uid)
    gids = split(cfg.proxy_gid) if cfg.proxy_gid.strip() else uids
    for flag, ids in (("-u", uids), ("-g", gids)):
        if not all(i.isdigit() for i in ids):
            raise CaptureError(f"{flag}: expected numeric IDs, got {','.join(ids)!r}")
    exclude = _ranges(cfg.outbound_ip_ranges_exclude, "-x", out.notes)
    if exclude.wildcard:
        raise CaptureError("-x: '*' is not a valid value for the excluded outbound ranges")
    include = _ranges(cfg.outbound_ip_ranges_include, "-i", out.notes)
    inbound_include = _ports(cfg.inbound_ports_include, "-b", wildcard=True)
    inbound_exclude = _ports(cfg.inbound_ports_exclude, "-d")
    outbound_include = _ports(cfg.outbound_ports_include, "-q")
    outbound_exclude = _ports(cfg.outbound_ports_exclude, "-o")
    virt = split(cfg.kube_virt_interfaces)

    for iface in split(cfg.exclude_interfaces):
        out.append("PREROUTING", "-i", iface, "-j", "RETURN")
        out.append("OUTPUT", "-o", iface, "-j", "RETURN")
    for iface in virt:
        out.insert("PREROUTING", 1, "-i", iface, "-j", "RETURN")
    out.append(INBOUND, "-p", "tcp", "--dport", tunnel_port, "-j", "RETURN")
    out.append(REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", proxy_port)
    out.append(IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", inbound_port)

    # inbound: nothing is captured without -b
    if inbound_include:
        out.append("PREROUTING", "-p", "tcp", "-j", INBOUND)
        if inbound_include == ["*"]:
            if inbound_exclude:
                for match in _port_match(inbound_exclude):
                    out.append(INBOUND, "-p", "tcp", *match, "-j", "RETURN")
            out.append(INBOUND, "-p", "tcp", "-j", IN_REDIRECT)
        else:
            for port in inbound_include:
                out.append(INBOUND, "-p", "tcp", "--dport", port, "-j", IN_REDIRECT)

    # outbound
    out.append("OUTPUT", "-j", OUTPUT)
    if outbound_exclude:
        for proto in ("tcp", "udp"):
            for match in _port_match(outbound_exclude):
                out.append(OUTPUT, "-p", proto, *match, "-j", "RETURN")
    out.append(OUTPUT, "-o", "lo", "-s", PASSTHROUGH_SOURCE, "-j", "RETURN")
    for flag, ids in (("--uid-owner", uids), ("--gid-owner", gids)):
        for owner in ids:
            # the sidecar calling its own pod's address (a service VIP resolved to itself) goes in through Envoy
            out.append(OUTPUT, "-o", "lo", "!", "-d", LOCALHOST, "-p", "tcp", "!", "--dport", tunnel_port,
                       "-m", "owner", flag, owner, "-j", IN_REDIRECT)
            if not include.has_loopback:
                # the app calling its own pod address over lo is not captured (unless -i names a loopback range)
                out.append(OUTPUT, "-o", "lo", "-m", "owner", "!", flag, owner, "-j", "RETURN")
            # the sidecar's own outbound traffic is never captured (no loop)
            out.append(OUTPUT, "-m", "owner", flag, owner, "-j", "RETURN")
    out.append(OUTPUT, "-d", LOCALHOST, "-j", "RETURN")
    for net in exclude.nets:
        out.append(OUTPUT, "-d", net, "-j", "RETURN")
    for port in outbound_include:
        out.append(OUTPUT, "-p", "tcp", "--dport", port, "-j", REDIRECT)
    if include.wildcard:
        out.append(OUTPUT, "-j", REDIRECT)
        for iface in virt:
            out.insert("PREROUTING", 1, "-i", iface, "-j", REDIRECT)
    elif include.nets:
        for net in include.nets:
            for iface in virt:
                out.insert("PREROUTING", 1, "-i", iface, "-d", net, "-j", REDIRECT)
            out.append(OUTPUT, "-d", net, "-j", REDIRECT)
        out.append(OUTPUT, "-j", "RETURN")
    return out
