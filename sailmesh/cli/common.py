"""Helpers shared by CLI verbs: the state-dir option, finding the running mesh, printing errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sailmesh import settings as settings_mod
from sailmesh.cli.apiclient import remember_token
from sailmesh.errors import PlatformError
from sailmesh.platform import ready
from sailmesh.platform.state import MeshState


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        default=None,
        help="where the running mesh keeps its state and logs (default ~/.sailmesh, env SAILMESH_STATE_DIR)",
    )


def state_dir(args: argparse.Namespace) -> str:
    return args.state_dir or settings_mod.load().state_dir


def _standalone_control_plane(sdir: str) -> MeshState | None:
    """The control plane whose ready record (platform/ready.py) is in `sdir` (or `sdir`/controlplane), if it lives."""
    from sailmesh.platform.state import pid_alive

    for folder in (sdir, os.path.join(sdir, "controlplane")):
        record = ready.read(folder)
        if record is not None and pid_alive(record.pid):
            return MeshState(supervisor_pid=record.pid, api_url=record.api_url, xds_address="",
                             api_token_file=os.path.join(folder, "api-token"))
    return None


def running_mesh(args: argparse.Namespace) -> MeshState:
    """The running mesh's state (or a standalone control plane's, as a mesh without instances); its API token is
    remembered for every later API call of this command."""
    sdir = state_dir(args)
    try:
        mesh = MeshState.load(sdir)
    except PlatformError as e:
        found = _standalone_control_plane(sdir)
        if found is None:
            raise PlatformError(f"{e} (or a control plane: `sailmesh controlplane`, then --state-dir its state "
                                "dir)") from None
        mesh = found
    remember_token(mesh.api_url, mesh.api_token())
    return mesh


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def print_table(rows: Sequence[Sequence[object]]) -> None:
    """Rows as kubectl prints them: left-aligned columns three spaces apart, the first row the header."""
    text = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(text[0]))] if text else []
    for r in text:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def sailmesh_command() -> str:
    """How the user can run this sailmesh from their shell: `sailmesh` when PATH finds this one, else the venv's
    entry point (e.g. `.venv/bin/sailmesh`, relative to the user's shell's directory: scripts/demo passes it as
    SAILMESH_SHELL_CWD), else `python -m sailmesh` with this interpreter."""
    import shutil  # (bz2, lzma, fnmatch): only `up` / `demo` print this

    here = os.path.join(os.path.dirname(sys.executable), "sailmesh")
    found = shutil.which("sailmesh")
    if found and os.path.realpath(found) == os.path.realpath(here):
        return "sailmesh"
    if os.path.exists(here):
        rel = os.path.relpath(here, os.environ.get("SAILMESH_SHELL_CWD") or os.getcwd())
        return rel if not rel.startswith("..") else here
    return f"{sys.executable} -m sailmesh"
