"""`sailmesh iptables` (alias `istio-iptables`): install Istio's traffic capture in this network namespace.

What the injected `istio-init` container runs, with istio-iptables' flags: the nat rules send outbound TCP to the
sidecar's port 15001 and inbound TCP to 15006, never capturing the sidecar's own traffic (UID/GID 1337); with
`-m TPROXY` inbound goes through the mangle table and policy routing instead; with `--redirect-dns` the app's DNS
to the resolvers of /etc/resolv.conf goes to the agent's 15053; a pod with an IPv6 address (or `--dual-stack`)
gets the same rules for ip6tables. The rules are applied with `iptables-restore`/`ip6tables-restore` and `ip`
(needs CAP_NET_ADMIN); `--dry-run` prints them instead.

examples:
  sailmesh iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --dry-run
  sailmesh istio-iptables -p 15001 -z 15006 -u 1337 -i 10.0.0.0/8 -o 5432     # capture one range, not Postgres
  sailmesh istio-iptables -i '*' -b '*' --redirect-dns -m TPROXY --dry-run    # DNS capture, TPROXY inbound
"""

from __future__ import annotations

import argparse
import os
import sys

from sailmesh.errors import CaptureError
from sailmesh.iptables import dns, local
from sailmesh.iptables.apply import apply, saved
from sailmesh.iptables.rules import CaptureConfig, build

# flags istio-iptables has that change what it installs, not implemented here: refused, never ignored
UNSUPPORTED = ("--drop-invalid", "--network-namespace")
# boolean flags and the environment variables Istio also reads them from (pkg/flag BindEnv, AdditionalEnv)
BOOLEANS = {"--redirect-dns": ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"), "--capture-all-dns": ("CAPTURE_ALL_DNS",),
            "--dual-stack": ("DUAL_STACK", "ISTIO_DUAL_STACK")}
# env-only settings Istio reads (tools/istio-iptables/pkg/constants); owner-group filters are not implemented
LOOPBACK_ENV, OWNER_GROUPS_ENV = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", ("ISTIO_OUTBOUND_OWNER_GROUPS",
                                                                       "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")


def _bool(value: str | None, flag: str) -> bool:
    """Go's strconv.ParseBool (what Istio's flags accept)."""
    if value is None:
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False", ""):
        return False
    raise CaptureError(f"{flag}: {value!r} is not a boolean")


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
                   help="REDIRECT or TPROXY")
    p.add_argument("-i", "--istio-service-cidr", default="", help="outbound ranges to capture: '*' or CIDRs")
    p.add_argument("-x", "--istio-service-exclude-cidr", default="", help="outbound ranges never captured")
    p.add_argument("-b", "--istio-inbound-ports", default="",
                   help="inbound ports to capture: '*' or ports ('' captures no inbound traffic)")
    p.add_argument("-d", "--istio-local-exclude-ports", default="", help="inbound ports never captured (with -b '*')")
    p.add_argument("-q", "--istio-outbound-ports", default="", help="outbound ports always captured")
    p.add_argument("-o", "--istio-local-outbound-ports-exclude", default="", help="outbound ports never captured")
    p.add_argument("-k", "--kube-virt-interfaces", default="", help="interfaces whose inbound traffic is outbound")
    p.add_argument("-c", "--istio-exclude-interfaces", default="", help="interfaces never captured")
    p.add_argument("-t", "--istio-inbound-tproxy-mark", default=d.tproxy_mark, help="TPROXY mode's mark (1337)")
    p.add_argument("-r", "--istio-inbound-tproxy-route-table", default=d.tproxy_route_table,
                   help="TPROXY mode's routing table (133)")
    p.add_argument("--redirect-dns", nargs="?", const="true", default=None,
                   help="capture the app's DNS to the resolvers of /etc/resolv.conf to the agent's 15053 "
                        "(env REDIRECT_DNS, ISTIO_META_DNS_CAPTURE)")
    p.add_argument("--capture-all-dns", nargs="?", const="true", default=None,
                   help="with --redirect-dns: every port-53 destination, not only the resolvers")
    p.add_argument("--dual-stack", nargs="?", const="true", default=None,
                   help="IPv6 rules too when the pod has an IPv6 address besides IPv4 (env ISTIO_DUAL_STACK)")
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
            raise CaptureError(f"{flag}: not implemented (Istio's invalid-packet drop / CNI mode)")
    if os.environ.get(OWNER_GROUPS_ENV[0], "*") not in ("", "*") or os.environ.get(OWNER_GROUPS_ENV[1]):
        raise CaptureError(f"{' / '.join(OWNER_GROUPS_ENV)}: owner-group filters are not implemented")
    flags: dict[str, bool] = {}
    for flag, envs in BOOLEANS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        env = next((os.environ[e] for e in envs if e in os.environ), None)  # the flag wins over the environment
        flags[flag] = _bool(value if value is not None else env, flag)
    redirect_dns, capture_all = flags["--redirect-dns"], flags["--capture-all-dns"]
    servers: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    if redirect_dns and not capture_all:  # as Istio: resolv.conf is read only when its servers are needed
        try:
            servers = dns.resolvers()
        except OSError as e:
            raise CaptureError(f"failed to load {dns.RESOLV_CONF}: {e}") from e
    return CaptureConfig(
        redirect_dns=redirect_dns, capture_all_dns=capture_all, dns_servers_v4=servers[0], dns_servers_v6=servers[1],
        enable_ipv6=local.pod_addresses().ipv6(flags["--dual-stack"]),
        host_ipv4_loopback_cidr=os.environ.get(LOOPBACK_ENV) or CaptureConfig().host_ipv4_loopback_cidr,
        tproxy_mark=args.istio_inbound_tproxy_mark, tproxy_route_table=args.istio_inbound_tproxy_route_table,
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
        sys.stdout.write(rules.dry_run_text())
        return 0
    try:
        apply(rules)
    except CaptureError as e:
        print(f"istio-iptables: {e}", file=sys.stderr)
        return 1
    # as istio-iptables: the resulting table, for the init container's log
    sys.stdout.write(saved(rules.ipv6) or rules.dry_run_text())
    return 0
