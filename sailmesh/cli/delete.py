"""`sailmesh delete KIND NAME...` or `delete -f FILE`: remove config from the running mesh, like kubectl delete.

  sailmesh delete virtualservice reviews -n default
  sailmesh delete vs reviews ratings
  sailmesh delete -f virtual-service-all-v1.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from sailmesh.api.resource import DEFAULT_NAMESPACE
from sailmesh.cli.apply import add_dry_run, post, send
from sailmesh.cli.common import add_state_dir, fail
from sailmesh.cli.get import kind_info, unknown_kind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="", help="resource kind (vs, dr, gw, ...), then names")
    parser.add_argument("names", nargs="*", default=[], help="names of the resources to delete")
    parser.add_argument("-f", "--filename", dest="files", action="append", default=[],
                        help="delete the resources named in this file or directory (- for standard input)")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    add_dry_run(parser)
    add_state_dir(parser)


def run(args: argparse.Namespace) -> int:
    if args.files:
        if args.kind:
            return fail("give either -f FILE or KIND NAME..., not both")
        return send(args, "/api/v1/delete", "deleted", check=False)  # deleting needs names only
    if not args.kind or not args.names:
        return fail("delete needs KIND NAME... (e.g. `sailmesh delete vs reviews`) or -f FILE")
    info = kind_info(args.kind)
    if info is None:
        return fail(unknown_kind(args.kind))
    docs: list[dict[str, Any]] = []
    for name in args.names:
        meta = {"name": name, **({"namespace": args.namespace} if info.namespaced else {})}
        docs.append({"file": "", "line": 0,
                     "doc": {"apiVersion": info.api_versions()[-1], "kind": info.kind, "metadata": meta}})
    if args.dry_run == "client":
        for d in docs:
            print(f"{info.kind} {args.namespace}/{d['doc']['metadata']['name']} deleted (dry run)")
        return 0
    return post(args, "/api/v1/delete", docs)
