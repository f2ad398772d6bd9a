"""`sailmesh version`: the client, the running control plane, and the Envoy the proxies run."""

from __future__ import annotations

import argparse
import json
import subprocess

from sailmesh import __version__
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, running_mesh
from sailmesh.errors import AgentError, PlatformError
from sailmesh.processes import envoy_binary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("short", "json"), default="short")
    parser.add_argument("--remote", action=argparse.BooleanOptionalAction, default=True,
                        help="also ask the running control plane (default: yes)")
    add_state_dir(parser)


def envoy_version() -> str:
    """The version line of the Envoy binary the agents start."""
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (AgentError, OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    part = out.split("version:", 1)[-1].strip()
    fields = part.split("/")
    return fields[1] if len(fields) > 2 else part or "unknown"


def run(args: argparse.Namespace) -> int:
    info: dict[str, str] = {"client": __version__, "envoy": envoy_version()}
    if args.remote:
        try:
            status, body = call(running_mesh(args).api_url, "GET", "/version", timeout=5)
            info["controlplane"] = str((body or {}).get("version", "")) if status == 200 else f"HTTP {status}"
        except PlatformError as e:
            info["controlplane"] = f"not reachable ({e})"
    if args.output == "json":
        print(json.dumps(info, indent=2))
    else:
        print(f"client version: {info['client']}")
        if "controlplane" in info:
            print(f"control plane version: {info['controlplane']}")
        print(f"data plane version: Envoy {info['envoy']}")
    return 0
