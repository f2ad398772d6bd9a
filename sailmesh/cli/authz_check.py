"""`sailmesh x authz check PROXY`: the RBAC rules in effect on a proxy, readable (istioctl x authz check).

Read from the listeners the control plane generated for the proxy (its inbound HTTP chains): one row per rule
with its action, the AuthorizationPolicy it came from, who it admits (FROM) and what (TO). Rules of policies marked
`istio.io/dry-run: "true"` are listed as DRY-RUN (evaluated and counted, not enforced).

  sailmesh x authz check reviews-v1-0
  sailmesh x authz check productpage-v1-0 -o json
"""

from __future__ import annotations

import argparse
import json

from sailmesh.cli.common import add_state_dir, fail, print_table, running_mesh
from sailmesh.errors import PlatformError


def add_authz_arguments(parser: argparse.ArgumentParser) -> None:
    """`x authz`: its one subcommand, `check`."""
    sub = parser.add_subparsers(dest="authz_command", metavar="COMMAND", required=True)
    c = sub.add_parser("check", help="the RBAC rules in effect on a proxy, readable", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(c)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proxy", help="proxy name as proxy-status shows it (reviews-v1-0), or a unique part")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    # Envoy's protos load only when this subcommand runs: every `sailmesh x ...` parses its arguments first
    from sailmesh.cli import explain_steps
    from sailmesh.cli.explain import control_plane_dump
    from sailmesh.cli.proxy_config import connected, pick

    try:
        name, node_id = pick(connected(args), args.proxy)
        dump = control_plane_dump(running_mesh(args).api_url, node_id, "listeners")
    except PlatformError as e:
        return fail(str(e))
    rows = explain_steps.rbac_rules(dump.get("listeners", {}))
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no authorization policies apply to {name}: every request is allowed (Istio's default)")
        return 0
    print(f"Checked {len({r['listener'] for r in rows})} HTTP listener(s) of {name}; "
          "Istio evaluates CUSTOM, then DENY, then ALLOW (with any ALLOW policy, a request no ALLOW rule "
          "matches is denied).")
    order = {"AUDIT": 0, "DENY": 1, "ALLOW": 2}
    seen: set[tuple[str, ...]] = set()
    table: list[tuple[str, ...]] = [("ACTION", "AuthorizationPolicy", "RULE", "FROM", "TO")]
    for r in sorted(rows, key=lambda r: (r["dry_run"], order.get(r["action"], 3), r["policy"], r["rule"])):
        row = (r["action"] + (" (DRY-RUN)" if r["dry_run"] else ""), r["policy"], r["rule"], r["principals"],
               r["permissions"])
        if row not in seen:
            seen.add(row)
            table.append(row)
    print_table(table)
    return 0
