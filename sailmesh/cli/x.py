"""`sailmesh x ...`: experimental commands, as istioctl's `x`.

  sailmesh x flags UO            # what a response flag means, its usual causes, the command that shows more
  sailmesh x flags               # every flag
  sailmesh x describe service reviews -n default
  sailmesh x describe workload reviews-v1-0
  sailmesh x load -c 2 -n 20 --from fortio http://httpbin:8000/get   # fortio-style load through a sidecar
  sailmesh x ca rotate-root      # rotate the mesh CA's root without breaking traffic (docs/security.md)
  sailmesh x token revoke NS SA  # revoke the join tokens of one identity
"""

from __future__ import annotations

import argparse

from sailmesh.cli import ca, describe, flags, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="x_command", metavar="COMMAND")
    f = sub.add_parser("flags", help="explain Envoy response flags (UH, UF, UO, NR, URX, DC, RL, UAEX, FI, DI, ...)")
    f.add_argument("codes", nargs="*", help="flags as access logs show them (UO, or UF,URX); none: all")
    f.set_defaults(_x=run_flags)
    d = sub.add_parser("describe", help="what applies to a service or workload, with warnings where it conflicts",
                       description=describe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    describe.add_arguments(d)
    d.set_defaults(_x=describe.run)
    ld = sub.add_parser("load", help="fortio-style load through a workload's sidecar, printing a code histogram",
                        description=load.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_arguments(ld)
    ld.set_defaults(_x=load.run)
    c = sub.add_parser("ca", help="the mesh CA: status, rotate-root", description=ca.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ca.add_arguments(c)
    c.set_defaults(_x=ca.run)
    t = sub.add_parser("token", help="join tokens: revoke")
    ca.add_token_arguments(t)
    t.set_defaults(_x=ca.run_token)


def run_flags(args: argparse.Namespace) -> int:
    codes = args.codes or [f.code for f in flags.FLAGS]
    lines = [line for code in codes for line in flags.explain(code)]
    print("\n".join(lines))
    return 1 if any("not a response flag" in line for line in lines) else 0


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_x", None)
    if handler is None:
        print("usage: sailmesh x {flags,describe,load,ca,token} ...  (sailmesh x --help)")
        return 2
    return int(handler(args))
