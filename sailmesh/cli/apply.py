"""`sailmesh apply -f FILE`: validate locally, then apply to the running mesh (nothing applied on error)."""

from __future__ import annotations

import argparse
import sys

from sailmesh.api.parse import load_paths
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True,
                        help="file or directory of config; repeatable")
    add_state_dir(parser)


def documents(files: list[str]) -> tuple[list[dict[str, object]], list[str]]:
    """The documents in files, each with where it came from, plus parse errors."""
    loaded = load_paths(files)
    docs = [{"file": r.source.file, "line": r.source.line, "doc": dict(r.raw)} for r in loaded.resources]
    return docs, [str(e) for e in loaded.errors]


def send(args: argparse.Namespace, path: str, verb_done: str) -> int:
    docs, errors = documents(args.files)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return fail("nothing was changed")
    if not docs:
        return fail("no resources found in " + ", ".join(args.files))
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "POST", path, {"documents": docs})
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        for e in (body or {}).get("errors", [f"HTTP {status}"]):
            print(e, file=sys.stderr)
        return fail("nothing was changed")
    for line in body.get(verb_done, []):
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    return send(args, "/api/v1/apply", "results")
