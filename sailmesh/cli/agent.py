"""`sailmesh agent`: run the per-workload agent (Istio's pilot-agent) in the foreground.

  sailmesh agent --type sidecar --ip 127.0.10.3 --name reviews-v1-0 --namespace default \
      --app-ports 9080:41234 -- python -m sailmesh.samples.bookinfo.reviews   (`sailmesh up` runs it for you)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from sailmesh import settings
from sailmesh.agent import podips
from sailmesh.agent.config import AgentConfig, parse_address, parse_app_ports, parse_labels
from sailmesh.agent.main import serve
from sailmesh.errors import AgentError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's flags; anything after `--` is the app command to supervise."""
    ports = settings.ProxyPorts()
    cp = settings.ControlPlanePorts()
    parser.add_argument("--type", dest="proxy_type", choices=("sidecar", "router"), default="sidecar")
    parser.add_argument("--ip", required=True, help="the pod ip: a loopback address such as 127.0.1.2 in the "
                        "embedded mesh; a pod on a network (with an interception mode) gives its own")
    parser.add_argument("--name", required=True, help="pod name, e.g. reviews-v1-0")
    parser.add_argument("--namespace", default=settings.MeshDefaults().default_namespace)
    parser.add_argument("--labels", default="", help="pod labels, e.g. app=reviews,version=v1")
    parser.add_argument("--service-account", default="default")
    parser.add_argument("--app-ports", default="", help="containerPort:appPort pairs, e.g. 9080:41234")
    parser.add_argument("--probe-app", action="store_true",
                        help="report ready only while the app accepts connections on its app ports")
    parser.add_argument("--readiness-probe", default="", metavar="JSON",
                        help="the app's readiness probe, run straight against the app (as Istio's rewritten probes)")
    parser.add_argument("--app-probers", default=os.environ.get("ISTIO_KUBE_APP_PROBERS", ""), metavar="JSON",
                        help="the app's probes served on the status port as /app-health/<container>/<probe> "
                        "(Istio's ISTIO_KUBE_APP_PROBERS, its default)")
    parser.add_argument("--xds-address", default=f"{cp.host}:{cp.xds_plaintext}", help="control plane HOST:PORT")
    parser.add_argument("--delta", action="store_true", help="use delta xDS instead of state of the world")
    parser.add_argument("--admin-port", type=int, default=ports.admin)
    parser.add_argument("--stats-port", type=int, default=ports.stats)
    parser.add_argument("--health-port", type=int, default=ports.health)
    parser.add_argument("--status-port", type=int, default=ports.agent_metrics, help="merged metrics, /quitquitquit")
    parser.add_argument("--app-metrics-port", type=int, default=0, help="merge the app's metrics from this port")
    parser.add_argument("--app-metrics-path", default="/metrics")
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--min-drain-seconds", type=float, default=0.0,
                        help="drain at least this long, so the endpoint can leave the other proxies first "
                        "(Istio's MINIMUM_DRAIN_DURATION)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--log-level", default="warning", help="Envoy's log level")
    parser.add_argument("--initial-fetch-timeout", type=float, default=10.0,
                        help="seconds Envoy waits for its first CDS/LDS before starting without them")  # fmt: skip
    parser.add_argument("--max-connections", type=int, default=100_000, help="max downstream connections")
    parser.add_argument("--state-dir", default="", help="where the bootstrap, Envoy's log and pid go")
    parser.add_argument("--ca-address", default="", help="the CA (control plane TLS port) HOST:PORT "
                        "(default: the xDS host, port 15012)")
    parser.add_argument("--ca-root", default="", help="PEM file with the root that verifies the CA's certificate")
    parser.add_argument("--token-file", default="",
                        help="0600 file holding the join token for this namespace/service account (not the token)")
    parser.add_argument("--xds-tls", action="store_true",
                        help="connect to xDS over mTLS with the workload certificate (the control plane's 15012)")
    parser.add_argument("--cert-ttl", type=float, default=0.0, help="requested certificate lifetime, seconds "
                        "(0 = the CA's default, 24 h)")
    parser.add_argument("--dns-address", default="", metavar="HOST:PORT",
                        help="the mesh's DNS server (udp): Envoy resolves DNS clusters only there (it forwards other "
                             "names to the system's nameservers; not on loopback: the system's nameservers after it)")
    parser.add_argument("--dns-capture", action="store_true",
                        default=os.environ.get("ISTIO_META_DNS_CAPTURE", "").lower() == "true",
                        help="Istio's DNS proxying: answer the mesh's names on --dns-proxy-address, forward the rest "
                             "(default: env ISTIO_META_DNS_CAPTURE=true)")
    parser.add_argument("--dns-auto-allocate", action="store_true",
                        default=os.environ.get("ISTIO_META_DNS_AUTO_ALLOCATE", "").lower() == "true",
                        help="with --dns-capture: ServiceEntry hosts without addresses resolve to 240.240.x.y VIPs "
                             "(default: env ISTIO_META_DNS_AUTO_ALLOCATE=true)")
    parser.add_argument("--dns-proxy-address", default="127.0.0.1:15053", metavar="HOST:PORT",
                        help="where the DNS proxy listens, UDP and TCP (istio-iptables --redirect-dns sends there)")
    parser.add_argument("--dns-upstreams", default="", metavar="IP[:PORT],...",
                        help="forward other names there (default: the nameservers of /etc/resolv.conf)")
    parser.add_argument("--dns-forward-parallel", action="store_true",
                        default=os.environ.get("DNS_FORWARD_PARALLEL", "").lower() == "true",
                        help="send a forwarded query to every upstream at once and answer with the first reply "
                             "(Istio's DNS_FORWARD_PARALLEL; default: one after the other)")
    parser.add_argument("--interception-mode", choices=("REDIRECT", "TPROXY", "NONE"),
                        default=os.environ.get("ISTIO_META_INTERCEPTION_MODE") or "",
                        help="how istio-iptables captures the pod (env ISTIO_META_INTERCEPTION_MODE; default: "
                             "not captured, apps reach the sidecar on its own ports): REDIRECT/TPROXY serve "
                             "inbound on 15006's virtualInbound, TPROXY transparently")
    parser.add_argument("--dual-stack", action="store_true",
                        default=os.environ.get("ISTIO_DUAL_STACK", "").lower() == "true",
                        help="with --interception-mode REDIRECT/TPROXY and an IPv4 --ip: also declare the pod's "
                             "global IPv6 addresses (/proc/net/if_inet6) in INSTANCE_IPS, so it is served on both "
                             "wildcards (Istio's ISTIO_DUAL_STACK; default: env ISTIO_DUAL_STACK=true)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the agent's own debug messages")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND... : the app to run and supervise")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Flags -> AgentConfig (raises AgentError on bad values)."""
    host, port = parse_address(args.xds_address, settings.ControlPlanePorts().xds_plaintext)
    if args.readiness_probe:
        try:
            json.loads(args.readiness_probe)
        except ValueError as e:
            raise AgentError(f"--readiness-probe: not JSON: {e}") from e
    return AgentConfig(
        ip=args.ip,
        name=args.name,
        namespace=args.namespace,
        proxy_type=args.proxy_type,
        labels=parse_labels(args.labels),
        service_account=args.service_account,
        app_ports=parse_app_ports(args.app_ports),
        probe_app=args.probe_app,
        readiness_probe=args.readiness_probe,
        app_probers=args.app_probers,
        xds_host=host,
        xds_port=port,
        delta=args.delta,
        admin_port=args.admin_port,
        stats_port=args.stats_port,
        health_port=args.health_port,
        status_port=args.status_port,
        app_metrics_port=args.app_metrics_port,
        app_metrics_path=args.app_metrics_path,
        drain_seconds=args.drain_seconds,
        min_drain_seconds=args.min_drain_seconds,
        concurrency=args.concurrency,
        log_level=args.log_level,
        initial_fetch_timeout_s=args.initial_fetch_timeout,
        max_downstream_connections=args.max_connections,
        ca_address=args.ca_address,
        ca_root_file=args.ca_root,
        token_file=args.token_file,
        trust_domain=settings.MeshDefaults().trust_domain,
        cert_ttl_s=args.cert_ttl,
        xds_tls=args.xds_tls,
        dns_address=args.dns_address,
        dns_capture=args.dns_capture,
        dns_auto_allocate=args.dns_auto_allocate,
        dns_proxy_address=args.dns_proxy_address,
        dns_upstreams=args.dns_upstreams,
        dns_forward_parallel=args.dns_forward_parallel,
        interception_mode=args.interception_mode,
        extra_ips=tuple(podips.ipv6_addresses()) if args.dual_stack and args.interception_mode in (
            "REDIRECT", "TPROXY") and ":" not in args.ip else (),
    )


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT, drain, exit 0."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s agent: %(message)s",
        stream=sys.stderr,
    )
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        cfg = config_from_args(args)
        state_dir = Path(args.state_dir or Path(settings.load().state_dir) / "agents" / cfg.namespace / cfg.name)
        return asyncio.run(serve(cfg, state_dir, command))
    except AgentError as e:
        print(f"sailmesh agent: {e}", file=sys.stderr)
        return 1
