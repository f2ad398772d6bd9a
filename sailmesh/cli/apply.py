"""`sailmesh apply -f FILE|DIR|-`: validate locally, then apply to the running mesh and print analyzer warnings.

  sailmesh apply -f virtual-service-all-v1.yaml
  sailmesh apply -f networking/                     # every file of a directory
  cat vs.yaml | sailmesh apply -f -
  sailmesh apply -f vs.yaml --dry-run=server        # what would change, and the analyzers' warnings
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sailmesh.api.parse import LoadResult, load_paths, parse_text
from sailmesh.api.validate import errors_only, validate
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError

STDIN = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True,
                        help="file or directory of config, or - for standard input; repeatable")
    add_dry_run(parser)
    add_state_dir(parser)


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", nargs="?", const="client", default="none", choices=("none", "client", "server"),
                        help="client: only validate here; server: the control plane validates and says what would "
                             "change, nothing is changed (kubectl's --dry-run)")


def load_inputs(files: list[str]) -> LoadResult:
    """Every resource in the files and directories named, `-` meaning standard input (as kubectl reads it)."""
    paths = [f for f in files if f != STDIN]
    result = load_paths(paths) if paths else LoadResult()
    if STDIN in files:
        piped = parse_text(sys.stdin.read(), "<stdin>")
        result.resources.extend(piped.resources)
        result.errors.extend(piped.errors)
    return result


def documents(files: list[str], check: bool = True) -> tuple[list[dict[str, object]], list[str]]:
    """The documents in files, each with where it came from, plus parse and (with check) validation errors.

    Validation runs here first because only here are the field lines known; the control plane checks again.
    """
    loaded = load_inputs(files)
    docs = [{"file": r.source.file, "line": r.source.line, "doc": dict(r.raw)} for r in loaded.resources]
    errors = [str(e) for e in loaded.errors]
    if check:
        for r in loaded.resources:
            errors.extend(str(i) for i in errors_only(validate(r)))
    return docs, errors


def post(args: argparse.Namespace, path: str, docs: list[dict[str, Any]]) -> int:
    """Send documents to the control plane; print its lines, its warnings (stderr) and its errors (exit 1)."""
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "POST", path,
                            {"documents": docs, "dryRun": args.dry_run == "server", "analyze": True})
    except PlatformError as e:
        return fail(str(e))
    body = body if isinstance(body, dict) else {}
    for line in body.get("results", []):
        print(line)
    for warning in body.get("warnings", []):
        print(f"Warning: {warning}", file=sys.stderr)
    if status != 200:
        for message in body.get("errors", [f"HTTP {status}"]):
            print(message, file=sys.stderr)
        return fail("nothing was changed" if not body.get("results") else "some resources were not found")
    return 0


def send(args: argparse.Namespace, path: str, verb_done: str, check: bool = True) -> int:
    docs, errors = documents(args.files, check)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return fail("nothing was changed")
    if not docs:
        return fail("no resources found in " + ", ".join(args.files))
    if args.dry_run == "client":
        for d in docs:
            doc: Any = d["doc"]
            meta = doc.get("metadata") or {}
            print(f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')} {verb_done} (dry run)")
        return 0
    return post(args, path, docs)


def run(args: argparse.Namespace) -> int:
    return send(args, "/api/v1/apply", "valid")
