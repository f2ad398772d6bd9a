"""`sailmesh iptables` (alias `istio-iptables`): install Istio's traffic capture in this network namespace.

What the injected `istio-init` container runs, with istio-iptables' flags: the nat rules send outbound TCP to the
sidecar's port 15001 and inbound TCP to 15006, never capturing the sidecar's own traffic (UID/GID 1337). The
rules are applied with `iptables-restore` (needs CAP_NET_ADMIN); `--dry-run` prints them instead.

examples:
  sailmesh iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --dry-run
  sailmesh istio-iptables -p 15001 -z 15006 -u 1337 -i 10.0.0.0/8 -o 5432     # capture one range, not Postgres
"""

from __future__ import annotations

import argparse
import sys

from sailmesh.errors import CaptureError
from sailmesh.iptables.apply import apply, saved_nat
from sailmesh.iptables.rules import CaptureConfig, build

# flags istio-iptables has that change what it installs, not implemented here: refused, never ignored
UNSUPPORTED = ("--redirect-dns", "--capture-all-dns", "--drop-invalid", "--network-namespace")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = CaptureConfig()
    p.add_argument("-p", "--envoy-port", default=d.proxy_port, help="outbound traffic goes here (15001)")
    p.add_argument("-z", "--inbound-capture-port", default=d.inbound_capture_port,
                   help="inbound traffic goes here (15006)")
    p.add_argument("-e", "--inbound-tunnel-port", default=d.inbound_tunnel_port,
                   help="the tunnel port, never captured (15008)")
    p.add_argument("-u", "--proxy-uid", default=d.proxy_uid, help="the sidecar's UID(s), not captured (1337)")
    p.add_argument("-g", "--proxy-gid", default="", help="the sidecar's GID(s) (default: the -u values)")
    p.add_argument("-m", "--istio-inbound-interception-mode", default=d.interception_mode,
                   help="REDIRECT (TPROXY is not implemented)")
    p.add_argument("-i", "--istio-service-cidr", default="", help="outbound ranges to capture: '*' or CIDRs")
    p.add_argument("-x", "--istio-service-exclude-cidr", default="", help="outbound ranges never captured")
    p.add_argument("-b", "--istio-inbound-ports", default="",
                   help="inbound ports to capture: '*' or ports ('' captures no inbound traffic)")
    p.add_argument("-d", "--istio-local-exclude-ports", default="", help="inbound ports never captured (with -b '*')")
    p.add_argument("-q", "--istio-outbound-ports", default="", help="outbound ports always captured")
    p.add_argument("-o", "--istio-local-outbound-ports-exclude", default="", help="outbound ports never captured")
    p.add_argument("-k", "--kube-virt-interfaces", default="", help="interfaces whose inbound traffic is outbound")
    p.add_argument("-c", "--istio-exclude-interfaces", default="", help="interfaces never captured")
    p.add_argument("-t", "--istio-inbound-tproxy-mark", default="1337", help="TPROXY mode only")
    p.add_argument("-r", "--istio-inbound-tproxy-route-table", default="133", help="TPROXY mode only")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the rules (iptables-restore input), apply none")
    p.add_argument("--log_output_level", default="default:info",
                   help="accepted for Istio's command line; this program always logs at info")
    for flag in UNSUPPORTED:
        p.add_argument(flag, nargs="?", const="true", default=None, help=argparse.SUPPRESS)


def config(args: argparse.Namespace) -> CaptureConfig:
    """The capture settings from istio-iptables' flags (CaptureError for a flag this program does not act on)."""
    for flag in UNSUPPORTED:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value not in (None, "false"):
            raise CaptureError(f"{flag}: not implemented (Istio's DNS capture / invalid-packet drop / CNI mode)")
    return CaptureConfig(
        proxy_port=args.envoy_port, inbound_capture_port=args.inbound_capture_port,
        inbound_tunnel_port=args.inbound_tunnel_port, proxy_uid=args.proxy_uid, proxy_gid=args.proxy_gid,
        interception_mode=args.istio_inbound_interception_mode,
        outbound_ip_ranges_include=args.istio_service_cidr, outbound_ip_ranges_exclude=args.istio_service_exclude_cidr,
        inbound_ports_include=args.istio_inbound_ports, inbound_ports_exclude=args.istio_local_exclude_ports,
        outbound_ports_include=args.istio_outbound_ports,
        outbound_ports_exclude=args.istio_local_outbound_ports_exclude,
        kube_virt_interfaces=args.kube_virt_interfaces, exclude_interfaces=args.istio_exclude_interfaces)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config(args)
        rules = build(cfg)
    except CaptureError as e:
        print(f"istio-iptables: {e}", file=sys.stderr)
        return 2
    for note in rules.notes:
        print(f"istio-iptables: {note}", file=sys.stderr)
    if args.dry_run:
        sys.stdout.write(rules.restore_text())
        return 0
    try:
        apply(rules)
    except CaptureError as e:
        print(f"istio-iptables: {e}", file=sys.stderr)
        return 1
    # as istio-iptables: the resulting table, for the init container's log
    sys.stdout.write(saved_nat() or rules.restore_text())
    return 0
