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
import urllib.parse
from typing import Any

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


def _rules_here(api_url: str, node_id: str) -> list[dict[str, Any]]:
    """The rules read in this process from the proxy's config dump (Envoy's protos load here)."""
    from sailmesh.cli.explain import control_plane_dump
    from sailmesh.explain import explain_steps

    return explain_steps.rbac_rules(control_plane_dump(api_url, node_id, "listeners").get("listeners", {}))


def run(args: argparse.Namespace) -> int:
    from sailmesh.cli.apiclient import call
    from sailmesh.cli.proxy_config import connected, pick

    try:
        name, node_id = pick(connected(args), args.proxy)
        api_url = running_mesh(args).api_url
        status, body = call(api_url, "GET", "/api/v1/authz?" + urllib.parse.urlencode({"proxyID": node_id}))
        if status == 404:  # a control plane that does not list them (older): read its dump here
            rows = _rules_here(api_url, node_id)
        elif status != 200:
            raise PlatformError("; ".join((body or {}).get("errors", [f"the control plane answered HTTP {status}"])))
        else:
            rows = list(body.get("rules", []))
    except PlatformError as e:
        return fail(str(e))
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
