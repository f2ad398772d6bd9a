"""`sailmesh controlplane`: run the control plane (config store, registry, xDS server, HTTP API).

  sailmesh controlplane --config-dir mesh/ --workload-file workloads.json   (`sailmesh up` runs it for you)
  sailmesh controlplane --kubeconfig ~/.kube/config    # config and workloads from Kubernetes
  sailmesh proxy-status                                # the operating commands find it (its state dir's
                                                       # controlplane.json; --state-dir DIR for another one)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal

from sailmesh import settings as settings_mod
from sailmesh.ca.limits import CSR_PER_IDENTITY
from sailmesh.cli.common import fail
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.dashboard.app import make_app as dashboard_app
from sailmesh.errors import SailmeshError
from sailmesh.platform import ready
from sailmesh.webhook.inject import InjectionConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", action="append", default=[],
                        help="directory of YAML config to watch (a git checkout works); repeatable")
    parser.add_argument("--workload-file", default="", help="local workload registry file (embedded platform)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--xds-port", type=int, default=15010,
                        help="plaintext ADS port, with --xds-plaintext only (0 = any free port)")
    parser.add_argument("--xds-plaintext", action="store_true",
                        help="also serve ADS without TLS or identity checks on 127.0.0.1 (debugging; off by default)")
    parser.add_argument("--ca-port", type=int, default=15013,
                        help="the certificate service for first CSRs (join token, TLS without client certificate)")
    parser.add_argument("--http-port", type=int, default=15014, help="HTTP API and /metrics port (0 = any free port)")
    parser.add_argument("--mesh-config", default="", metavar="FILE",
                        help="Istio mesh config YAML (MeshConfig); the ConfigMap istio in istio-system overlays it")
    parser.add_argument("--xds-tls-port", type=int, default=15012,
                        help="ADS and the certificate service over TLS (Istio's 15012; 0 = any free port)")
    parser.add_argument("--state-dir", default="",
                        help="the CA root (key 0600), join tokens and API token "
                             "(default: $SAILMESH_STATE_DIR/controlplane)")
    parser.add_argument("--cacerts", default="", help="plug-in CA directory in Istio's cacerts layout "
                        "(ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)")
    parser.add_argument("--min-cert-ttl", type=float, default=60.0,
                        help="the shortest workload certificate lifetime the CA signs, seconds")
    parser.add_argument("--dns-port", type=int, default=None, metavar="PORT",
                        help="serve the mesh's DNS (service hostnames -> endpoint addresses; other names forwarded "
                             "to /etc/resolv.conf's nameservers for loopback clients) on --host:PORT, UDP and TCP, "
                             "for the hosts of Envoy's DNS clusters (0: any free port; default: off)")
    parser.add_argument("--csr-rate", type=float, default=CSR_PER_IDENTITY.rate,
                        help="CSRs a second per identity (namespace/service account), bursts of five times that; "
                             "0 = no limit (benchmarks)")
    parser.add_argument("--api-mtls", default="", metavar="HOST:PORT",
                        help="also serve the HTTP API over TLS for remote callers, who present the admin client "
                             "certificate of `sailmesh x ca admin-cert` (off by default)")
    parser.add_argument("--kubeconfig", default="", metavar="PATH",
                        help="also take config and workloads from this Kubernetes API server (list + watch); "
                             "`in-cluster` uses the pod's service account")
    parser.add_argument("--context", default=None, metavar="NAME",
                        help="with --kubeconfig: the kubeconfig context to use (default: its current-context)")
    parser.add_argument("--leader-lease-seconds", type=float, default=15.0, metavar="S",
                        help="with --kubeconfig: the Lease duration of the replicas' leader election (client-go's "
                             "15 s; renew deadline and retry period in its proportions; 0 = no election)")
    parser.add_argument("--webhook-port", type=int, default=None, metavar="PORT",
                        help="admission webhooks (validation, sidecar injection; TLS) on --host:PORT "
                             f"(default: {settings_mod.ControlPlanePorts().webhook} with --kubeconfig, else off; "
                             "0: any free port)")
    parser.add_argument("--webhook-san", action="append", default=[], metavar="NAME_OR_IP",
                        help="another name or address for the webhook's serving certificate (repeatable)")
    parser.add_argument("--injection-discovery-address", default=InjectionConfig().discovery_address,
                        metavar="HOST:PORT", help="where injected proxies reach the control plane (xDS over mTLS)")
    parser.add_argument("--proxy-image", default=InjectionConfig().image, help="the image of injected proxies")
    parser.add_argument("-v", "--verbose", action="store_true")


# The control plane keeps hundreds of thousands of long-lived objects (config, services, generated resources) and
# allocates many short-lived containers per push; with CPython's default collection thresholds (700, 10, 10) the
# cyclic GC took ~40% of the event loop's time during pushes at 1,000 services / 500 proxies (py-spy --native).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Move what start-up loaded out of the collector's way and collect young objects less often.

    Reference counting still frees everything that is not in a cycle at once; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(cp: ControlPlane) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # start() may wait for the Kubernetes API server (as istiod does): a signal meanwhile ends the wait
    starting = asyncio.ensure_future(cp.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await cp.stop()
        return 0
    stopping.cancel()
    try:
        starting.result()
    except (SailmeshError, OSError) as e:
        await cp.stop()
        return fail(f"control plane failed to start: {e}")
    tune_gc()
    host = cp.opts.host if cp.opts.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    o = cp.opts  # every port as bound (0 asked for any free one): for the CLI and for `sailmesh up`
    record = ready.write(o.state_dir, f"http://{host}:{o.http_port}", {
        "http": o.http_port, "xdsTls": o.xds_tls_port, "ca": o.ca_port, "xds": o.xds_port, "dns": o.dns_port or 0})
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(OSError):
            os.remove(record)
        await cp.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_mod.load()
    opts = ControlPlaneOptions(config_dirs=args.config_dir, workload_file=args.workload_file, host=args.host,
                               xds_port=args.xds_port, http_port=args.http_port, xds_tls_port=args.xds_tls_port,
                               state_dir=args.state_dir or os.path.join(settings.state_dir, "controlplane"),
                               cacerts_dir=args.cacerts, min_cert_ttl_s=args.min_cert_ttl,
                               xds_plaintext=args.xds_plaintext, ca_port=args.ca_port,
                               mesh_config_file=args.mesh_config, dns_port=args.dns_port,
                               csr_rate=args.csr_rate, api_mtls_address=args.api_mtls, kubeconfig=args.kubeconfig,
                               kube_context=args.context, leader_lease_s=args.leader_lease_seconds,
                               webhook_port=args.webhook_port if args.webhook_port is not None else (
                                   settings.controlplane.webhook if args.kubeconfig else None),
                               webhook_sans=tuple(args.webhook_san),
                               injection=InjectionConfig(image=args.proxy_image,
                                                         discovery_address=args.injection_discovery_address))
    try:
        cp = ControlPlane(opts, settings)
        cp.mount("/dashboard/", dashboard_app)  # `sailmesh dashboard` opens it (same port, same loopback default)
    except (SailmeshError, OSError) as e:
        return fail(f"control plane failed to start: {e}")
    return asyncio.run(_serve(cp))
