"""`sailmesh validate -f FILE_OR_DIR [-f ...] [-o text|json]`: check config files like `istioctl validate`."""

from __future__ import annotations

import argparse
import json
import sys

from sailmesh.api.validate import validate_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="files", action="append", required=True, metavar="FILE_OR_DIR",
                        help="a YAML/JSON file or a directory of them (repeatable)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--quiet-warnings", action="store_true", help="print errors only")


def run(args: argparse.Namespace) -> int:
    result, issues = validate_paths(args.files)
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
