"""`sailmesh down`: stop the running embedded mesh (the same clean stop as Ctrl-C), and every process it started
even when its supervisor is gone (each checked against the state file's pid, start time and command line).

  sailmesh down
  sailmesh down --timeout 60 --state-dir /tmp/mesh-state
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from sailmesh.cli.common import add_state_dir, fail, running_mesh, state_dir
from sailmesh.errors import PlatformError
from sailmesh.platform.state import remove
from sailmesh.platform.stop import is_recorded, is_same_process, stop_recorded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds each process left behind gets to stop after SIGTERM before SIGKILL")


def run(args: argparse.Namespace) -> int:
    sdir = state_dir(args)
    try:
        mesh = running_mesh(args)
    except PlatformError as e:
        return fail(str(e))
    pid = mesh.supervisor_pid
    supervisor = is_same_process(pid, mesh.supervisor_start_time, [])
    if supervisor:
        print(f"stopping the mesh supervisor (pid {pid}): it drains sidecars and gateways, then stops apps and "
              "the control plane")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while is_same_process(pid, mesh.supervisor_start_time, []):
            if time.monotonic() > deadline:
                print(f"the supervisor (pid {pid}) did not stop within {args.timeout:.0f}s; stopping its processes")
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    else:
        print(f"the mesh supervisor (pid {pid}) is not running; stopping the processes it started")
    left = [r for r in mesh.processes if is_recorded(r)]
    if supervisor and not left:
        remove(sdir)
        print(f"mesh stopped ({len(mesh.processes)} processes)")
        return 0
    stopped, skipped = stop_recorded(mesh.processes, grace=args.grace, say=print)
    remaining = [r for r in stopped if is_recorded(r)]
    remove(sdir)
    for rec in skipped:
        print(f"  left pid {rec.pid} alone: it is no longer {rec.name} (the pid was reused)")
    if remaining:
        return fail("still running: " + ", ".join(f"{r.name} (pid {r.pid})" for r in remaining))
    gone = len(mesh.processes) - len(stopped) - len(skipped)
    print(f"mesh stopped: {len(stopped)} processes stopped here"
          + (f", {gone} had already exited" if gone else ""))
    return 0
