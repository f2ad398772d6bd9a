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

from sailmesh.cli import authz_check, ca, describe, flags, load

PRECHECK_HELP = "can a mesh start here: Envoy, state dir, config, ports"


def _running(name: str) -> bool:
    """Whether this process may run `sailmesh x NAME`: false only when its command line names another `x`
    subcommand (then NAME's module, which imports the whole platform layer, need not load)."""
    argv = sys.argv[1:]
    if "x" not in argv or argv.index("x") + 1 >= len(argv):
        return True
    return argv[argv.index("x") + 1] == name


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
    a = sub.add_parser("authz", help="authorization: `check PROXY` lists the RBAC rules in effect on a proxy")
    asub = a.add_subparsers(dest="authz_command", metavar="COMMAND", required=True)
    c = asub.add_parser("check", help="the RBAC rules in effect on a proxy, readable",
                        description=authz_check.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    authz_check.add_arguments(c)
    c.set_defaults(_x=authz_check.run)
    if not _running("precheck"):
        sub.add_parser("precheck", help=PRECHECK_HELP)
        return
    precheck = importlib.import_module("sailmesh.cli.precheck")
    pre = sub.add_parser("precheck", help=PRECHECK_HELP,
                         description=precheck.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    precheck.add_arguments(pre)
    pre.set_defaults(_x=precheck.run)


def run_flags(args: argparse.Namespace) -> int:
    codes = args.codes or [f.code for f in flags.FLAGS]
    lines = [line for code in codes for line in flags.explain(code)]
    print("\n".join(lines))
    return 1 if any("not a response flag" in line for line in lines) else 0


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_x", None)
    if handler is None:
        print("usage: sailmesh x {flags,describe,load,ca,token,authz,precheck} ...  (sailmesh x --help)")
        return 2
    return int(handler(args))
