"""`sailmesh validate -f FILE_OR_DIR [-f ...] [-o text|json]`: check config files like `istioctl validate`.

  sailmesh validate -f networking/                     # every file of a directory
  sailmesh validate -f vs.yaml -f dr.yaml -o json
"""

from __future__ import annotations

import argparse
import json
import sys

from sailmesh.api.parse import MAX_FILE_BYTES, LoadResult, find_duplicates, load_paths, parse_text
from sailmesh.api.validate import issues_from_load
from sailmesh.errors import ParseError


def _load(files: list[str]) -> LoadResult:
    """Files and directories, plus standard input for `-` (as `istioctl validate -f -`)."""
    result = load_paths([f for f in files if f != "-"])
    if "-" in files:
        text = sys.stdin.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            result.errors.append(ParseError(f"input too large (over {MAX_FILE_BYTES} bytes)", file="<stdin>"))
        else:
            result.extend(parse_text(text, "<stdin>"))
            dups = find_duplicates(result.resources)
            if dups:
                bad = {(e.file, e.line) for e in dups}
                result.errors.extend(dups)
                result.resources = [r for r in result.resources if (r.source.file, r.source.line) not in bad]
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True, metavar="FILE_OR_DIR",
                        help="a YAML/JSON file, a directory of them, or - for standard input (repeatable)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--quiet-warnings", action="store_true", help="print errors only")


def run(args: argparse.Namespace) -> int:
    result = _load(args.files)
    issues = issues_from_load(result)
    if args.quiet_warnings:
        issues = [i for i in issues if i.severity == "error"]
    errors = [i for i in issues if i.severity == "error"]
    if args.output == "json":
        json.dump([i.to_dict() for i in issues], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for i in issues:
            prefix = "warning: " if i.severity == "warning" else ""
            print(f"{prefix}{i}")
        bad = {i.resource for i in errors if i.resource}
        total = len(result.resources) + len(result.unknown)
        if errors:
            print(f"{len(errors)} error(s) in {len(bad)} of {total} resource(s)"
                  + (f"; {len(errors) - sum(1 for i in errors if i.resource)} file-level" if
                     any(not i.resource for i in errors) else ""), file=sys.stderr)
        else:
            print(f"{total} resource(s) valid" + (f", {len(issues)} warning(s)" if issues else ""), file=sys.stderr)
    return 1 if errors else 0
