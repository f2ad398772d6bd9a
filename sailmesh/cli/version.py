"""`sailmesh version`: the client, the running control plane, and the Envoy the proxies run.

  sailmesh version
  sailmesh version --no-remote -o json   # without asking the control plane
"""

from __future__ import annotations

import argparse
import json
import os
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


CACHED_BINARIES = 16  # Envoy binaries whose version the cache keeps


def _cache_file() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sailmesh", "envoy-version.json")


def envoy_version() -> str:
    """The version of the Envoy binary the agents start. Starting Envoy to ask takes longer than the rest of
    `version`, so the answer is cached per binary (its path, size and modification time: a new binary is asked)."""
    try:
        binary = envoy_binary()
        st = os.stat(binary)
    except (AgentError, OSError) as e:
        return f"unknown ({e})"
    key = f"{os.path.realpath(binary)}:{st.st_size}:{st.st_mtime_ns}"
    cached: dict[str, str] = {}
    try:
        with open(_cache_file(), encoding="utf-8") as fh:
            found = json.load(fh)
        cached = {str(k): v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}
    except (OSError, ValueError):
        pass
    if key in cached:
        return cached[key]
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    version = _parse(out)
    if version != "unknown":
        try:
            os.makedirs(os.path.dirname(_cache_file()), exist_ok=True)
            tmp = f"{_cache_file()}.{os.getpid()}"
            # every binary's answer (the last CACHED_BINARIES): with one entry, two installs (two venvs' Envoy
            # packages) took turns replacing it and each `version` or `bug-report` started Envoy again
            kept = dict(list(cached.items())[-(CACHED_BINARIES - 1):]) if CACHED_BINARIES > 1 else {}
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({**kept, key: version}, fh)
            os.replace(tmp, _cache_file())
        except OSError:
            pass  # no cache: the next run asks Envoy again
    return version


def _parse(out: str) -> str:
    """The version number in `envoy --version`'s output."""
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
