"""`sailmesh apply -f FILE|DIR|-`: validate locally, then apply to the running mesh and print analyzer warnings.

  sailmesh apply -f virtual-service-all-v1.yaml
  sailmesh apply -f networking/                     # every file of a directory
  cat vs.yaml | sailmesh apply -f -
  sailmesh apply -f vs.yaml --dry-run=server        # what would change (a diff), the analyzers' warnings
  sailmesh apply -f vs.yaml --dry-run=client        # only validate here (no mesh needed)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sailmesh.api.parse import LoadResult, load_paths, parse_text
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


def field_errors(loaded: LoadResult) -> list[str]:
    """Istio's validation of what was read, each error at its field's file and line (known only here).

    Imported when needed: the validators are half of `apply`'s start-up CPU, and the control plane runs the same
    validation on every apply, so the CLI asks for them only for --dry-run=client or to explain a refusal.
    """
    from sailmesh.api.validate import errors_only, validate

    return [str(i) for r in loaded.resources for i in errors_only(validate(r))]


def post(args: argparse.Namespace, path: str, docs: list[dict[str, Any]],
         local_errors: Callable[[], list[str]] | None = None) -> int:
    """Send documents to the control plane; print its lines, its warnings (stderr) and its errors (exit 1).

    When it refuses them all (400) and `local_errors` finds errors here, those are printed instead: the same
    validation, with each field's line in the file (the control plane knows only where each document starts).
    """
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
        messages = body.get("errors", [f"HTTP {status}"])
        if status == 400 and not body.get("results") and local_errors is not None:
            messages = local_errors() or messages
        for message in messages:
            print(message, file=sys.stderr)
        return fail("nothing was changed" if not body.get("results") else "some resources were not found")
    return 0


def send(args: argparse.Namespace, path: str, verb_done: str, check: bool = True) -> int:
    """Read the files and send them; with `check`, validated here for --dry-run=client, and otherwise by the
    control plane first (it validates every apply anyway), here only to explain a refusal with field lines."""
    loaded = load_inputs(args.files)
    docs: list[dict[str, Any]] = [{"file": r.source.file, "line": r.source.line, "doc": dict(r.raw)}
                                  for r in loaded.resources]
    errors = [str(e) for e in loaded.errors]
    if check and args.dry_run == "client":
        errors += field_errors(loaded)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return fail("nothing was changed")
    if not docs:
        return fail("no resources found in " + ", ".join(args.files))
    if args.dry_run == "client":
        for d in docs:
            doc = d["doc"]
            meta = doc.get("metadata") or {}
            print(f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')} {verb_done} (dry run)")
        return 0
    return post(args, path, docs, (lambda: field_errors(loaded)) if check else None)


def run(args: argparse.Namespace) -> int:
    return send(args, "/api/v1/apply", "valid")
