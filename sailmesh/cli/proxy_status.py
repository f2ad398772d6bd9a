"""`sailmesh proxy-status`: every connected proxy and whether it is in sync (istioctl proxy-status).

  sailmesh proxy-status                      # every proxy: SYNCED, NOT SENT, STALE per xDS type
  sailmesh proxy-status reviews-v1-0         # what the control plane would send now vs what Envoy runs
  sailmesh proxy-status -o json
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from sailmesh.cli import envoy_dump as dump
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.cli.proxy_config import admin
from sailmesh.errors import PlatformError
from sailmesh.settings import ProxyPorts

COLUMNS = ("CDS", "LDS", "EDS", "RDS")


def status_word(t: dict[str, object] | None) -> str:
    """Istio's words: SYNCED when the last sent version is ACKed, STALE when not (yet), NOT SENT."""
    if t and t.get("error"):
        return "STALE (ERROR)"
    if not t or not t.get("sent"):
        return "NOT SENT"
    if t.get("nack"):
        return "STALE (NACK)"
    return "SYNCED" if t.get("acked") == t.get("sent") else "STALE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proxy", nargs="?", default="", help="only this proxy (id or name substring)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--admin-port", type=int, default=ProxyPorts().admin,
                        help="with PROXY: its Envoy admin port, to compare what it runs with the control plane's")
    add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "GET", "/debug/syncz")
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        return fail(f"control plane answered HTTP {status}")
    rows = [p for p in body if args.proxy in p.get("proxy", "")]
    if args.proxy and not rows:  # a name that matches nothing is an error naming what there is (as kubectl's)
        names = sorted(str(p.get("name") or p.get("proxy", "")) for p in body)
        return fail(f'no connected proxy matches "{args.proxy}" (connected: {", ".join(names) or "none"})')
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "TYPE", *COLUMNS, "CONTROL PLANE", "VERSION")]
    for p in rows:
        types = p.get("types", {})
        table.append((p.get("name") or p.get("proxy", ""), p.get("type", ""),
                      *(status_word(types.get(c)) for c in COLUMNS), p.get("controlplane", ""),
                      p.get("version", "")))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for p in rows:  # why a proxy keeps old config: the control plane could not generate the current one
        for short, t in sorted(p.get("types", {}).items()):
            if t.get("error"):
                print(f"{p.get('name') or p.get('proxy', '')} {short}: {t['error']}")
    if args.proxy and len(rows) == 1:
        return compare(mesh.api_url, rows[0], args.admin_port)
    return 0


def compare(api_url: str, row: dict[str, Any], admin_port: int) -> int:
    """istioctl proxy-status PROXY: the control plane's config for the proxy now against what its Envoy runs."""
    node_id = str(row.get("proxy", ""))
    try:
        status, want = call(api_url, "GET", "/debug/config_dump?" +
                            urllib.parse.urlencode({"proxyID": node_id, "types": "clusters,listeners,routes"}))
        if status != 200:
            return fail(f"the control plane has no config for {node_id}: HTTP {status}")
        got = dump.dynamic_resources(json.loads(admin(node_id.split("~")[1], admin_port, "/config_dump")))
    except PlatformError as e:
        return fail(str(e))
    print()
    differs = False
    wanted = {k: dict(want.get(k) or {}) for k in ("clusters", "listeners", "routes")}
    # routes are subscribed by name: only those the proxy's listeners ask for are sent
    asked = dump.rds_names(wanted["listeners"])
    wanted["routes"] = {k: v for k, v in wanted["routes"].items() if k in asked}
    for kind in ("clusters", "listeners", "routes"):
        diff = dump.differences(wanted[kind], got[kind], kind[:-1])
        print(f"{kind.capitalize()} {'Match' if not diff else 'Do Not Match'}")
        for line in diff:
            print(line)
        differs = differs or bool(diff)
    return 1 if differs else 0
