"""`sailmesh analyze`: istioctl analyze over config files, with Istio's message codes and exit codes.

  sailmesh analyze                                   # the running mesh (its config and workloads)
  sailmesh analyze -f my-vs.yaml                     # a file together with the running mesh
  sailmesh analyze -f networking/ --use-live=false -A  # files alone, every namespace
  sailmesh analyze -S "IST0102=Namespace default" -o yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sailmesh.api.files import read_paths
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, running_mesh
from sailmesh.errors import PlatformError

# istioctl's exit codes (cmd/istioctl: ExitUnknownError, ExitIncorrectUsage, ExitDataError, ExitAnalyzerFoundIssues).
EXIT_UNKNOWN = 1
EXIT_USAGE = 64
EXIT_DATA_ERROR = 65
EXIT_FOUND_ISSUES = 79
LEVEL_NAMES = ["Info", "Warning", "Error"]  # analysis.diagnostic.LEVELS' order (not imported: it loads the models)
DEFAULT_NAMESPACE = "default"  # api.resource's (that module loads more than this command needs)
FIELDS = ("code", "documentationUrl", "level", "message", "origin", "reference")  # istioctl's JSON/YAML form


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", action="append", default=[], metavar="FILE_OR_DIR",
                        help="config file or directory to analyze (repeatable)")
    parser.add_argument("-o", "--output", choices=("log", "text", "json", "yaml"), default="log",
                        help="output format (log/text: istioctl's line format)")
    parser.add_argument("--failure-threshold", choices=LEVEL_NAMES, default="Error",
                        help="lowest level that makes the exit code non-zero (default Error)")
    parser.add_argument("--output-threshold", choices=LEVEL_NAMES, default="Info",
                        help="lowest level printed (default Info)")
    parser.add_argument("--meshConfigFile", "--mesh-config-file", dest="mesh_config_file", default="",
                        help="MeshConfig YAML to analyze against (default: the running mesh's; none for files alone)")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE,
                        help="namespace whose messages are reported (default: default)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="report messages for all namespaces")
    parser.add_argument("-S", "--suppress", action="append", default=[], metavar="CODE=RESOURCE",
                        help="suppress a code on resources matching a glob, e.g. 'IST0102=Namespace frod' "
                             "or 'IST0103=Pod *.default' (repeatable)")
    parser.add_argument("--use-live", type=_boolean, default=True, metavar="true|false",
                        help="analyze the running mesh too (its config and its workloads as pods); with -f the "
                             "files' resources replace the live ones of the same name (default true)")
    add_state_dir(parser)


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _ask_control_plane(args: argparse.Namespace, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The running control plane's analysis of the request (analyze_api), or None when it offers none (an older
    one). PlatformError when no mesh runs or it cannot be reached."""
    mesh = running_mesh(args)
    status, body = call(mesh.api_url, "POST", "/api/v1/analyze", request)
    if status == 404:
        return None
    if status not in (200, 400) or not isinstance(body, dict):
        raise PlatformError(f"the control plane answered HTTP {status}: {(body or {}).get('errors')}")
    return status, body


def _answer_here(args: argparse.Namespace, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The same analysis in this process (files alone, or a control plane that does not analyze): the analyzers
    load here, which takes a while."""
    from sailmesh.controlplane import analyze_api

    live: list[dict[str, Any]] = []
    if request["useLive"]:
        status, body = call(running_mesh(args).api_url, "GET", "/api/v1/live")
        if status != 200:
            raise PlatformError(f"the control plane answered HTTP {status}: {(body or {}).get('errors')}")
        live = list(body.get("items", []))
    return analyze_api.answer(request, live, {})


def _files_alone(args: argparse.Namespace, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """`--use-live=false`: a running control plane analyzes the files alone (its analyzers are loaded already;
    analyze_api uses neither its live config nor its mesh config then); None when no mesh runs here or it cannot
    be reached (the files are then analyzed in this process, as before, and nothing about it is said)."""
    try:
        return _ask_control_plane(args, request)
    except PlatformError:
        return None


def _rank(level: str) -> int:
    return LEVEL_NAMES.index(level) if level in LEVEL_NAMES else 0


def _in_scope(namespace: str | None, selected: str | None) -> bool:
    """istioctl's filter: messages on the selected namespace's resources and on cluster-scoped ones."""
    return selected is None or namespace is None or namespace in ("", selected)


def render(messages: list[dict[str, Any]], fmt: str) -> str:
    """The messages in istioctl's log, json or yaml form."""
    if fmt in ("json", "yaml"):
        items = [{k: m.get(k, "") for k in FIELDS} for m in messages]
        if fmt == "json":
            return json.dumps(items, indent=2, ensure_ascii=False)
        import yaml  # only for -o yaml

        return yaml.safe_dump(items, sort_keys=True, allow_unicode=True).rstrip("\n")
    return "\n".join(str(m["text"]) for m in messages)


def _missing(paths: list[str]) -> list[str]:
    """The -f paths that cannot be opened at all (istioctl's gatherFiles stats and opens each one first)."""
    out = []
    for p in paths:
        if not os.path.exists(p):
            out.append(f"{p}: no such file or directory")
        elif not os.access(p, os.R_OK | (os.X_OK if os.path.isdir(p) else 0)):
            out.append(f"{p}: permission denied")
    return out


def _request(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]] | int:
    """What to ask (the files' text, -S rules, the mesh config's text) and the files that could not be parsed.

    A path that does not exist (or cannot be opened) ends the command before any analysis, exit 1: istioctl
    returns gatherFiles' error (`stat missing.yaml: no such file or directory`), which is its ExitUnknownError,
    neither the analyzer-findings code (79) nor the data-error code (65, for files it read but could not parse).
    """
    missing = _missing(list(args.filename))
    if missing:
        for m in missing:
            print(f"Error: {m}", file=sys.stderr)
        return EXIT_UNKNOWN
    texts, unreadable = read_paths(args.filename)
    mesh_text = None
    if args.mesh_config_file:
        try:
            with open(args.mesh_config_file, encoding="utf-8") as fh:
                mesh_text = fh.read()
        except (OSError, ValueError) as e:
            print(f"Error: cannot read mesh config {args.mesh_config_file}: {e}", file=sys.stderr)
            return EXIT_DATA_ERROR
    return ({"files": [{"name": n, "text": t} for n, t in texts], "suppress": list(args.suppress),
             "meshConfig": mesh_text, "useLive": bool(args.use_live)}, [str(e) for e in unreadable])


def run(args: argparse.Namespace) -> int:
    if not args.use_live and not args.filename:
        print("Error: --use-live=false needs at least one -f FILE_OR_DIR", file=sys.stderr)
        return EXIT_USAGE
    asked = _request(args)
    if isinstance(asked, int):
        return asked
    request, errors = asked
    found = None
    try:
        found = _ask_control_plane(args, request) if args.use_live else _files_alone(args, request)
        if found is None:
            found = _answer_here(args, request)
    except PlatformError as e:
        if not args.filename:
            print(f"Error: {e}; or analyze files with -f FILE_OR_DIR", file=sys.stderr)
            return EXIT_USAGE
        print(f"note: {e}; analyzing the files alone", file=sys.stderr)
        found = _answer_here(args, request | {"useLive": False})
    status, answer = found
    if status == 400:
        field, why = answer.get("field"), "; ".join(answer.get("errors", []))
        if field == "meshConfig":
            print(f"Error: cannot read mesh config {args.mesh_config_file}: {why}", file=sys.stderr)
            return EXIT_DATA_ERROR
        print(f"Error: {why}", file=sys.stderr)
        return EXIT_USAGE
    return _report(args, answer, errors + list(answer.get("errors", [])))


def _report(args: argparse.Namespace, answer: dict[str, Any], errors: list[str]) -> int:
    """Print the errors, the notes, the messages at or above the output threshold; istioctl's exit code."""
    for err in errors:
        print(f"Error: {err}", file=sys.stderr)
    selected = None if args.all_namespaces else args.namespace
    messages = [m for m in answer.get("messages", []) if _in_scope(m.get("namespace"), selected)]
    shown = [m for m in messages if _rank(m["level"]) >= _rank(args.output_threshold)]
    for note in answer.get("notes", []):  # accepted, not enforced (not an istioctl message: said on stderr)
        if _in_scope(note.get("namespace"), selected):
            print(f"Note: {note['text']}", file=sys.stderr)
    fmt = "log" if args.output == "text" else args.output
    if shown or fmt != "log":
        print(render(shown, fmt))
    elif not errors:
        target = "all namespaces" if selected is None else f"namespace: {selected}"
        print(f"\u2714 No validation issues found when analyzing {target}.", file=sys.stderr)
    if any(_rank(m["level"]) >= _rank(args.failure_threshold) for m in messages):
        return EXIT_FOUND_ISSUES
    return EXIT_DATA_ERROR if errors else 0
