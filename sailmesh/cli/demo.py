"""`sailmesh demo`: the Bookinfo sample with sidecars and an ingress gateway, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os

from sailmesh import settings as settings_mod
from sailmesh.cli.common import fail, state_dir
from sailmesh.cli.up import add_mesh_options, options, refuse_if_running, serve
from sailmesh.platform.local import LocalMesh

BOOKINFO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "bookinfo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mesh_options(parser)
    parser.add_argument("--no-routing", action="store_true",
                        help="start without the bundled Gateway/VirtualService/DestinationRules")


def demo_dirs(with_routing: bool = True) -> list[str]:
    dirs = [os.path.join(BOOKINFO, "mesh")]
    if with_routing:
        dirs.append(os.path.join(BOOKINFO, "networking"))
    return dirs


def run(args: argparse.Namespace) -> int:
    sdir = state_dir(args)
    if msg := refuse_if_running(sdir):
        return fail(msg)
    mesh = LocalMesh(options(args, demo_dirs(not args.no_routing)), settings_mod.load(),
                     say=lambda s: print(s, flush=True))
    gw = f"http://{args.gateway_ip}:8080"
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
    return asyncio.run(serve(mesh, banner))
