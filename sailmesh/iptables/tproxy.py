"""Istio's TPROXY interception (`-m TPROXY`): the mangle-table rules of run.go and the policy routing of
tools/common/tproxy (ConfigureRoutes).

Inbound TCP is not NATed: new connections hit ISTIO_TPROXY, which hands them to the transparent listener on the
inbound capture port (15006) unchanged (the local address the listener sees is the original destination) and
marks them (1337); packets of established connections go through ISTIO_DIVERT (mark + accept). Marked packets are
routed by `ip rule fwmark 1337 lookup 133` to table 133's single `local default dev lo` route, i.e. delivered
locally. The connection mark is saved and restored so replies follow; the sidecar's own traffic to the pod over
lo is marked 1338 so ISTIO_INBOUND lets it pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sailmesh.errors import CaptureError
from sailmesh.iptables.builder import VERSIONED, RuleBuilder

if TYPE_CHECKING:
    from sailmesh.iptables.rules import CaptureConfig

DIVERT, TPROXY, INBOUND = "ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_INBOUND"
OUTBOUND_MARK = "1338"  # Istio's OutboundMark: the sidecar's outbound leg to its own pod
LOCALHOST_V6 = "::1/128"


def _number(value: str, flag: str) -> str:
    if not value.isdigit():
        raise CaptureError(f"{flag}: {value!r} is not a number")
    return value


def routes(cfg: CaptureConfig, inbound_captured: bool) -> list[list[str]]:
    """configureTProxyRoutes as `ip` commands: per family a rule for the mark and a local default route on lo
    (only when inbound ports are captured, as Istio)."""
    mark = _number(cfg.tproxy_mark, "-t")
    table = _number(cfg.tproxy_route_table, "-r")
    if not inbound_captured:
        return []
    families = [("-4", "0.0.0.0/0")] + ([("-6", "::/0")] if cfg.enable_ipv6 else [])
    out = [[fam, "rule", "add", "fwmark", mark, "lookup", table] for fam, _ in families]
    return out + [[fam, "route", "add", "local", dst, "dev", "lo", "table", table] for fam, dst in families]


def divert_chains(b: RuleBuilder, cfg: CaptureConfig, loopback: str, inbound_port: str) -> None:
    """ISTIO_DIVERT (mark and accept) and ISTIO_TPROXY (hand new connections to the inbound port)."""
    b.append(DIVERT, "mangle", "-j", "MARK", "--set-mark", cfg.tproxy_mark)
    b.append(DIVERT, "mangle", "-j", "ACCEPT")
    b.append_versioned(loopback, LOCALHOST_V6, TPROXY, "mangle", "!", "-d", VERSIONED, "-p", "tcp", "-j", "TPROXY",
                       "--tproxy-mark", f"{cfg.tproxy_mark}/0xffffffff", "--on-port", inbound_port)


def inbound(b: RuleBuilder, port: tuple[str, ...]) -> None:
    """One captured inbound port (or all, `port` empty): established packets divert, new ones go to TPROXY."""
    b.append(INBOUND, "mangle", "-p", "tcp", *port, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
             "-j", DIVERT)
    b.append(INBOUND, "mangle", "-p", "tcp", *port, "-j", TPROXY)


def marks(b: RuleBuilder, cfg: CaptureConfig, uids: list[str], gids: list[str], loopback: str) -> None:
    """The mangle rules run.go adds last in TPROXY mode (connection marks, the 1338 mark, ISTIO_INBOUND's head)."""
    mark = cfg.tproxy_mark
    b.append("PREROUTING", "mangle", "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark")
    b.append("OUTPUT", "mangle", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN")
    for flag, ids in (("--uid-owner", uids), ("--gid-owner", gids)):
        for owner in ids:
            b.append_versioned(loopback, LOCALHOST_V6, "OUTPUT", "mangle", "!", "-d", VERSIONED, "-p", "tcp",
                               "-o", "lo", "-m", "owner", flag, owner, "-j", "MARK", "--set-mark", OUTBOUND_MARK)
    b.append("OUTPUT", "mangle", "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark")
    b.insert(INBOUND, "mangle", 1, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN")
    b.insert_v4(INBOUND, "mangle", 2, "-p", "tcp", "-s", "127.0.0.6/32", "-i", "lo", "-j", "RETURN")
    b.insert_v6(INBOUND, "mangle", 2, "-p", "tcp", "-s", "::6/128", "-i", "lo", "-j", "RETURN")
    b.insert(INBOUND, "mangle", 3, "-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark", OUTBOUND_MARK,
             "-j", "RETURN")
