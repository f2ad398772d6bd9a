"""`sailmesh down`: stop the running embedded mesh (the same clean stop as Ctrl-C)."""

from __future__ import annotations

import argparse
import os
import signal
import time

from sailmesh.cli.common import add_state_dir, fail, running_mesh, state_dir
from sailmesh.errors import PlatformError
from sailmesh.platform.state import pid_alive, remove


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop")


def run(args: argparse.Namespace) -> int:
    try:
        mesh = running_mesh(args)
    except PlatformError as e:
        return fail(str(e))
    pid = mesh.supervisor_pid
    if not pid_alive(pid):
        remove(state_dir(args))
        return fail(f"the mesh supervisor (pid {pid}) was not running; removed its stale state")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return fail(f"mesh supervisor (pid {pid}) did not stop within {args.timeout:.0f}s")
        time.sleep(0.1)
    print("mesh stopped")
    return 0
