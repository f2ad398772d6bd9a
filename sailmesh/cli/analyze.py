"""`sailmesh analyze`: istioctl analyze over config files, with Istio's message codes and exit codes.

  sailmesh analyze                                   # the running mesh (its config and workloads)
  sailmesh analyze -f my-vs.yaml                     # a file together with the running mesh
  sailmesh analyze -f networking/ --use-live=false -A  # files alone, every namespace
  sailmesh analyze -S "IST0102=Namespace default" -o yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from sailmesh.analysis.diagnostic import LEVELS, Diagnostic, at_least
from sailmesh.analysis.registry import analyze
from sailmesh.analysis.suppress import apply_suppressions, parse_suppressions
from sailmesh.api.parse import load_paths
from sailmesh.api.resource import DEFAULT_NAMESPACE, Resource
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, running_mesh
from sailmesh.controlplane.live import resources as live_resources
from sailmesh.errors import ConfigError, PlatformError
from sailmesh.generate.enforcement import not_enforced

# istioctl's exit codes (cmd/istioctl: ExitIncorrectUsage, ExitDataError, ExitAnalyzerFoundIssues).
EXIT_USAGE = 64
EXIT_DATA_ERROR = 65
EXIT_FOUND_ISSUES = 79
LEVEL_NAMES = list(LEVELS)


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
                        help="MeshConfig YAML to analyze against")
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


def live_mesh(args: argparse.Namespace) -> list[Resource]:
    """The running mesh's config and workloads (as Pods and Namespaces); PlatformError when none runs."""
    mesh = running_mesh(args)
    status, body = call(mesh.api_url, "GET", "/api/v1/live")
    if status != 200:
        raise PlatformError(f"the control plane answered HTTP {status}: {(body or {}).get('errors')}")
    return live_resources(body.get("items", []))


def _load_mesh_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError("mesh config must be a YAML mapping")
    return data


def _in_scope(d: Diagnostic, namespace: str | None) -> bool:
    """istioctl's filter: messages on the selected namespace's resources and on cluster-scoped ones."""
    if namespace is None or d.resource is None:
        return True
    return d.resource.namespace in ("", namespace)


def render(diags: list[Diagnostic], fmt: str) -> str:
    """The messages in istioctl's log, json or yaml form."""
    if fmt in ("json", "yaml"):
        items = []
        for d in diags:
            item = d.as_dict()
            item["reference"] = d.location
            items.append(item)
        if fmt == "json":
            return json.dumps(items, indent=2, ensure_ascii=False)
        return yaml.safe_dump(items, sort_keys=True, allow_unicode=True).rstrip("\n")
    return "\n".join(d.render() for d in diags)


def run(args: argparse.Namespace) -> int:
    live: list[Resource] = []
    if args.use_live:
        try:
            live = live_mesh(args)
        except PlatformError as e:
            if not args.filename:
                print(f"Error: {e}; or analyze files with -f FILE_OR_DIR", file=sys.stderr)
                return EXIT_USAGE
            print(f"note: {e}; analyzing the files alone", file=sys.stderr)
    elif not args.filename:
        print("Error: --use-live=false needs at least one -f FILE_OR_DIR", file=sys.stderr)
        return EXIT_USAGE
    mesh: dict[str, Any] = {}
    if args.mesh_config_file:
        try:
            mesh = _load_mesh_config(args.mesh_config_file)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"Error: cannot read mesh config {args.mesh_config_file}: {e}", file=sys.stderr)
            return EXIT_DATA_ERROR
    try:
        rules = parse_suppressions(args.suppress)
    except ConfigError as e:
        print(f"Error: {e}", file=sys.stderr)
        return EXIT_USAGE
    loaded = load_paths(args.filename)
    for err in loaded.errors:
        print(f"Error: {err}", file=sys.stderr)
    namespace = None if args.all_namespaces else args.namespace
    given = {r.key for r in loaded.resources}
    resources = [*(r for r in live if r.key not in given), *loaded.resources]
    diags = [d for d in apply_suppressions(analyze(resources, mesh), rules) if _in_scope(d, namespace)]
    shown = [d for d in diags if at_least(d.level, args.output_threshold)]
    for r in resources:  # what the mesh accepts but does not act on (not an istioctl message: said on stderr)
        if namespace is None or r.namespace in ("", namespace):
            for line in not_enforced(r):
                print(f"Note: {line}", file=sys.stderr)
    fmt = "log" if args.output == "text" else args.output
    if shown or fmt != "log":
        print(render(shown, fmt))
    elif not loaded.errors:
        target = "all namespaces" if namespace is None else f"namespace: {namespace}"
        print(f"\u2714 No validation issues found when analyzing {target}.", file=sys.stderr)
    if any(at_least(d.level, args.failure_threshold) for d in diags):
        return EXIT_FOUND_ISSUES
    return EXIT_DATA_ERROR if loaded.errors else 0
