"""`python -m bench.dataplane.mesh_runner`: `sailmesh up` with agent flags (Envoy concurrency) for the benchmark.

`sailmesh up` has no flag for the sidecars' Envoy worker threads; the platform's MeshOptions does
(`extra_agent_args`), so the benchmark runs the embedded mesh through it, in the foreground, until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio

from sailmesh import settings as settings_mod
from sailmesh.cli.up import serve
from sailmesh.platform.local import LocalMesh
from sailmesh.platform.portplan import MeshOptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The addresses, ports and agent options of one benchmark mesh."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane.mesh_runner", description=__doc__)
    p.add_argument("-f", "--filename", dest="dirs", action="append", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--base-ip", required=True)
    p.add_argument("--gateway-ip", required=True)
    p.add_argument("--xds-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads per proxy")
    p.add_argument("--drain-seconds", type=float, default=1.0, help="sidecar drain on stop (short: faster cleanup)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the mesh until SIGTERM/SIGINT; prints sailmesh up's progress lines ("... are ready")."""
    a = parse_args(argv)
    opts = MeshOptions(
        config_dirs=a.dirs, state_dir=a.state_dir, base_ip=a.base_ip, gateway_ip=a.gateway_ip,
        xds_port=a.xds_port, http_port=a.http_port,
        extra_agent_args=("--concurrency", str(a.concurrency), "--drain-seconds", str(a.drain_seconds)),
    )
    mesh = LocalMesh(opts, settings_mod.load(), say=lambda s: print(s, flush=True))
    return asyncio.run(serve(mesh, lambda: [f"control plane API: {mesh.api_url}   xDS: {mesh.xds_address}"]))


if __name__ == "__main__":
    raise SystemExit(main())
