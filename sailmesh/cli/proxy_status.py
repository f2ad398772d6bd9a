"""`sailmesh proxy-status`: every connected proxy and whether it is in sync (istioctl proxy-status)."""

from __future__ import annotations

import argparse
import json

from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError

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
    add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "GET", "/debug/syncz", token=mesh.api_token())
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        return fail(f"control plane answered HTTP {status}")
    rows = [p for p in body if args.proxy in p.get("proxy", "")]
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
    return 0
