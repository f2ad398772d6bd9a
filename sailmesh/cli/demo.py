"""`sailmesh demo [bookinfo|httpbin]`: a sample mesh with sidecars and an ingress gateway, in the foreground:
Bookinfo (the default), or httpbin + sleep in foo, bar (sidecars) and legacy (none), the set-up of Istio's
security tasks.

  sailmesh demo                      # Bookinfo with its Gateway, VirtualServices and DestinationRules
  sailmesh demo --no-routing         # Bookinfo without the bundled routing config
  sailmesh demo httpbin              # Istio's security tasks' set-up
"""

from __future__ import annotations

import argparse
import asyncio
import os

from sailmesh import settings as settings_mod
from sailmesh.cli.common import fail, sailmesh_command, state_dir
from sailmesh.cli.up import add_mesh_options, options, refuse_if_running, serve
from sailmesh.platform.local import LocalMesh

BOOKINFO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "bookinfo")
HTTPBIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "httpbin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sample", nargs="?", choices=("bookinfo", "httpbin"), default="bookinfo",
                        help="which sample (default bookinfo)")
    add_mesh_options(parser)
    parser.add_argument("--no-routing", action="store_true",
                        help="start without the bundled Gateway/VirtualService/DestinationRules")


def demo_dirs(with_routing: bool = True, sample: str = "bookinfo") -> list[str]:
    root = HTTPBIN if sample == "httpbin" else BOOKINFO
    dirs = [os.path.join(root, "mesh")]
    if with_routing:
        dirs.append(os.path.join(root, "networking"))
    return dirs


def httpbin_banner(mesh: LocalMesh, gateway_ip: str) -> list[str]:
    """What `sailmesh demo httpbin` prints once everything is ready."""
    cmd = sailmesh_command()
    lines = [
        "",
        "httpbin is up.",
        "  namespaces:        foo, bar (httpbin and sleep with sidecars), legacy (the same, without sidecars)",
        "  from a workload:   sailmesh exec sleep -n foo -- curl -s http://httpbin.bar:8000/headers",
        f"  ingress (foo):     curl http://{gateway_ip}:8080/headers",
        "  workloads:         sailmesh get workloads -A",
        f"  control plane API: {mesh.api_url}   (sailmesh get peerauthentication -A, sailmesh proxy-status)",
        f"  logs:              {mesh.logs_dir}",
        "",
    ]
    return [line.replace("sailmesh ", f"{cmd} ") for line in lines]


def run(args: argparse.Namespace) -> int:
    sdir = state_dir(args)
    if msg := refuse_if_running(sdir):
        return fail(msg)
    mesh = LocalMesh(options(args, demo_dirs(not args.no_routing, args.sample)), settings_mod.load(),
                     say=lambda s: print(s, flush=True))
    if args.sample == "httpbin":
        return asyncio.run(serve(mesh, lambda: httpbin_banner(mesh, args.gateway_ip)))
    return asyncio.run(serve(mesh, lambda: bookinfo_banner(mesh, args.gateway_ip)))


def bookinfo_banner(mesh: LocalMesh, gateway_ip: str) -> list[str]:
    """What `sailmesh demo` prints once everything is ready."""
    gw = f"http://{gateway_ip}:8080"
    banner = [
        "",
        "Bookinfo is up.",
        f"  product page:      curl {gw}/productpage",
        f"  API:               curl {gw}/api/v1/products/0/reviews",
        f"  control plane API: {mesh.api_url}   (sailmesh get virtualservice, sailmesh proxy-status)",
        f"  logs:              {mesh.logs_dir}",
        f"  try:               sailmesh apply -f {os.path.join(BOOKINFO, 'tasks', 'virtual-service-all-v1.yaml')}",
        "",
    ]
    cmd = sailmesh_command()  # the command that works from the user's shell (e.g. .venv/bin/sailmesh)
    return [line.replace("sailmesh ", f"{cmd} ") for line in banner]
