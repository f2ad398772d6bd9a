"""`sailmesh apply -f FILE`: validate locally, then apply to the running mesh (nothing applied on error)."""

from __future__ import annotations

import argparse
import sys

from sailmesh.api.parse import load_paths
from sailmesh.api.validate import errors_only, validate
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True,
                        help="file or directory of config; repeatable")
    add_state_dir(parser)


def documents(files: list[str], check: bool = True) -> tuple[list[dict[str, object]], list[str]]:
    """The documents in files, each with where it came from, plus parse and (with check) validation errors.

    Validation runs here first because only here are the field lines known; the control plane checks again.
    """
    loaded = load_paths(files)
    docs = [{"file": r.source.file, "line": r.source.line, "doc": dict(r.raw)} for r in loaded.resources]
    errors = [str(e) for e in loaded.errors]
    if check:
        for r in loaded.resources:
            errors.extend(str(i) for i in errors_only(validate(r)))
    return docs, errors


def send(args: argparse.Namespace, path: str, verb_done: str, check: bool = True) -> int:
    docs, errors = documents(args.files, check)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return fail("nothing was changed")
    if not docs:
        return fail("no resources found in " + ", ".join(args.files))
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "POST", path, {"documents": docs}, token=mesh.api_token())
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        for message in (body or {}).get("errors", [f"HTTP {status}"]):
            print(message, file=sys.stderr)
        return fail("nothing was changed")
    for line in body.get(verb_done, []):
        print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    return send(args, "/api/v1/apply", "results")
