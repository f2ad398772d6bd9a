"""`sailmesh x ...`: experimental commands, as istioctl's `x`.

  sailmesh x flags UO            # what a response flag means, its usual causes, the command that shows more
  sailmesh x flags               # every flag
  sailmesh x describe service reviews -n default
  sailmesh x describe workload reviews-v1-0
  sailmesh x load -c 2 -n 20 --from fortio http://httpbin:8000/get   # fortio-style load through a sidecar
  sailmesh x ca rotate-root      # rotate the mesh CA's root without breaking traffic (docs/security.md)
  sailmesh x token revoke NS SA  # revoke the join tokens of one identity
  sailmesh x authz check reviews-v1-0     # the RBAC rules in effect on a proxy, readable
  sailmesh x precheck -f mesh/            # can a mesh start here (Envoy, state dir, config, ports)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# subcommand -> (module under sailmesh.cli, its add_arguments, its run, one-line help); only the module of the
# subcommand that runs is imported (`x load` brings aiohttp, `x ca` cryptography, `x precheck` the platform layer)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "flags": ("flags", "add_arguments", "run", "explain Envoy response flags (UH, UF, UO, NR, URX, DC, RL, UAEX, FI, "
              "DI, ...)"),
    "describe": ("describe", "add_arguments", "run", "what applies to a service or workload, with warnings where it "
                 "conflicts"),
    "load": ("load", "add_arguments", "run", "fortio-style load through a workload's sidecar, printing a code "
             "histogram"),
    "ca": ("ca", "add_arguments", "run", "the mesh CA: status, rotate-root, admin-cert"),
    "token": ("ca", "add_token_arguments", "run_token", "join tokens: revoke"),
    "authz": ("authz_check", "add_authz_arguments", "run", "authorization: `check PROXY` lists the RBAC rules in "
              "effect on a proxy"),
    "precheck": ("precheck", "add_arguments", "run", "can a mesh start here: Envoy, state dir, config, ports"),
}


def _chosen(argv: list[str]) -> set[str]:
    """The `x` subcommands whose modules to import: the one on the command line, none for `sailmesh x --help`,
    every one when this process's command line is not `sailmesh x ...` (main() called with its own argv)."""
    if "x" not in argv:
        return set(SUBCOMMANDS)
    rest = argv[argv.index("x") + 1:]
    return {rest[0]} if rest and rest[0] in SUBCOMMANDS else set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="x_command", metavar="COMMAND")
    chosen = _chosen(sys.argv[1:])
    for name, (module, adder, runner, help_text) in SUBCOMMANDS.items():
        if name not in chosen:
            sub.add_parser(name, help=help_text)  # listed by `x --help`; its module is not imported
            continue
        mod = importlib.import_module(f"sailmesh.cli.{module}")
        doc = (mod.__doc__ or "").strip()
        p = sub.add_parser(name, help=help_text, description=doc if "\n" in doc else help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        getattr(mod, adder)(p)
        handler: Callable[[argparse.Namespace], int] = getattr(mod, runner)
        p.set_defaults(_x=handler)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_x", None)
    if handler is None:
        print("usage: sailmesh x {flags,describe,load,ca,token,authz,precheck} ...  (sailmesh x --help)")
        return 2
    return int(handler(args))
