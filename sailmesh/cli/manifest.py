"""`sailmesh manifest generate [--profile P]`: print what `sailmesh install` applies, as YAML (istioctl's verb).

Examples:
  sailmesh manifest generate --profile minimal > sailmesh.yaml
  sailmesh manifest generate --profile demo | kubectl apply --server-side -f -
"""

from __future__ import annotations

import argparse
import sys

from sailmesh.cli.common import fail
from sailmesh.cli.install import add_common, add_settings, dump_yaml, values_from
from sailmesh.install.manifests import generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("generate",), help="generate: print the install's objects")
    add_common(parser)
    add_settings(parser)
    parser.add_argument("--component", choices=("all", "crds", "control-plane"), default="all",
                        help="only the CRDs, only everything else, or all (default)")


def run(args: argparse.Namespace) -> int:
    try:
        objs = generate(values_from(args))
    except ValueError as e:
        return fail(str(e))
    if args.component == "crds":
        objs = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    elif args.component == "control-plane":
        objs = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
    sys.stdout.write(dump_yaml(objs))
    return 0
