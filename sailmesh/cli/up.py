"""`sailmesh up -f DIR`: run the embedded mesh in the foreground until Ctrl-C or `sailmesh down`.

  sailmesh up -f mesh/ -f networking/                  # workloads and Istio config from directories
  sailmesh up -f mesh/ --base-ip 127.0.20.2 --gateway-ip 127.0.20.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from sailmesh import settings as settings_mod
from sailmesh.cli.common import add_state_dir, fail, sailmesh_command, state_dir
from sailmesh.errors import PlatformError
from sailmesh.platform import egress
from sailmesh.platform.portplan import MeshOptions
from sailmesh.platform.state import MeshState, pid_alive
from sailmesh.platform.stop import is_recorded

if TYPE_CHECKING:  # the supervisor is imported where a mesh starts: `x precheck` shares these options without it
    from sailmesh.platform.local import LocalMesh


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="dirs", action="append", required=True,
                        help="directory (or file) of config and LocalWorkload declarations; repeatable")
    add_mesh_options(parser)


def add_mesh_options(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)
    parser.add_argument("--base-ip", default="127.0.10.2", help="first workload loopback address")
    parser.add_argument("--gateway-ip", default="127.0.0.1", help="address the ingress gateway listens on")
    parser.add_argument("--egress-gateway", action="store_true",
                        help="also run Istio's istio-egressgateway (istio: egressgateway, Service istio-system/"
                             "istio-egressgateway ports 80 and 443), as Istio's demo profile does")
    parser.add_argument("--egress-gateway-ip", default="",
                        help="address of the egress gateway (implies --egress-gateway; default: .254 of --gateway-ip)")
    parser.add_argument("--xds-port", type=int, default=15010,
                        help="control-plane plaintext xDS port, with --xds-plaintext (0 = a free port)")
    parser.add_argument("--http-port", type=int, default=15014,
                        help="control-plane HTTP API/monitoring port (0 = a free port)")
    parser.add_argument("--xds-tls-port", type=int, default=15012,
                        help="control-plane ADS + certificate service over TLS (0 = a free port)")
    parser.add_argument("--ca-port", type=int, default=15013, help="the CA's first-CSR port (0 = a free port)")
    parser.add_argument("--xds-plaintext", action="store_true",
                        help="proxies use plaintext ADS on 127.0.0.1:--xds-port (debugging; no identity checks)")
    parser.add_argument("--min-cert-ttl", type=float, default=60.0, help="the CA's shortest certificate, seconds")
    parser.add_argument("--cert-ttl", type=float, default=0.0,
                        help="workload certificate lifetime the sidecars ask for, seconds (0 = 24 h)")
    parser.add_argument("--delta", action="store_true", help="sidecars use delta xDS (DELTA_GRPC)")
    parser.add_argument("--proxy-concurrency", type=int, default=0,
                        help="Envoy worker threads per proxy (default: the agent's, 2); the mesh config's "
                             "defaultConfig.concurrency and ProxyConfig concurrency win")


def options(args: argparse.Namespace, dirs: list[str]) -> MeshOptions:
    return MeshOptions(
        config_dirs=dirs, state_dir=state_dir(args), base_ip=args.base_ip, gateway_ip=args.gateway_ip,
        xds_port=args.xds_port, http_port=args.http_port, delta=args.delta, xds_tls_port=args.xds_tls_port,
        min_cert_ttl_s=args.min_cert_ttl, cert_ttl_s=args.cert_ttl, ca_port=args.ca_port,
        xds_plaintext=args.xds_plaintext,
        egress_gateway_ip=args.egress_gateway_ip or (egress.default_ip(args.gateway_ip) if args.egress_gateway else ""),
        extra_agent_args=("--concurrency", str(args.proxy_concurrency)) if args.proxy_concurrency > 0 else (),
    )


async def serve(mesh: LocalMesh, banner: Callable[[], list[str]]) -> int:
    """Start the mesh, print the banner (made once it runs: it names the ports the control plane bound), run until a
    signal, stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(mesh.start())
    interrupted = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: start() stops what it started
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, PlatformError):
            await starting
        mesh.say("interrupted while starting; everything started was stopped")
        return 130
    interrupted.cancel()
    try:
        starting.result()
    except PlatformError as e:
        return fail(str(e))
    for line in banner():
        mesh.say(line)
    down = f"{sailmesh_command()} down" + ("" if mesh.opts.state_dir == settings_mod.load().state_dir
                                           else f" --state-dir {mesh.opts.state_dir}")
    mesh.say(f"press Ctrl-C (or run `{down}`) to stop")
    # Crashed processes are restarted by the mesh itself (with back-off); it gives up on the control plane only
    # after a crash loop, and then the whole mesh stops with the cause.
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(mesh.fatal.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    if mesh.fatal.is_set():
        mesh.say(f"error: {mesh.fatal_reason}")
    mesh.say("stopping: draining sidecars and the gateway, then apps, then the control plane")
    await mesh.stop()
    mesh.say("stopped")
    return 1 if mesh.fatal.is_set() else 0


def refuse_if_running(sdir: str) -> str | None:
    try:
        existing = MeshState.load(sdir)
    except PlatformError:
        return None
    if pid_alive(existing.supervisor_pid) and existing.supervisor_pid != os.getpid():
        return (f"a mesh is already running from {sdir} (pid {existing.supervisor_pid}); "
                f"run `sailmesh down --state-dir {sdir}` first")
    left = [r for r in existing.processes if is_recorded(r)]
    if left:
        return (f"{len(left)} processes of a mesh whose supervisor is gone still run from {sdir} "
                f"(e.g. {left[0].name}, pid {left[0].pid}); run `sailmesh down --state-dir {sdir}` first")
    return None


def run(args: argparse.Namespace) -> int:
    sdir = state_dir(args)
    if msg := refuse_if_running(sdir):
        return fail(msg)
    from sailmesh.platform.local import LocalMesh
    mesh = LocalMesh(options(args, args.dirs), settings_mod.load(), say=lambda s: print(s, flush=True))
    return asyncio.run(serve(mesh, lambda: [f"control plane API: {mesh.api_url}   xDS: {mesh.xds_address}",
                                            f"logs: {mesh.logs_dir}"]))
