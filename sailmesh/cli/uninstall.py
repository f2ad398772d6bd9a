"""`sailmesh uninstall [--purge]`: remove what `sailmesh install` applied (any profile).

As `istioctl uninstall`: the control plane, gateways, RBAC and webhook configurations go; Istio's CRDs (and with
them every Istio object in the cluster) and the control plane's namespace stay unless `--purge` is given.

Examples:
  sailmesh uninstall                # the current kubeconfig context ($KUBECONFIG, ~/.kube/config)
  sailmesh uninstall --purge        # and Istio's CRDs (every Istio object with them) and the namespace
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from sailmesh.cli.common import fail
from sailmesh.cli.install import add_common, resource_of, values_from
from sailmesh.errors import SailmeshError
from sailmesh.install.manifests import Values, generate
from sailmesh.platform.kube.client import KubeApiError, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--kubeconfig", default=None, metavar="PATH")
    parser.add_argument("--context", default=None)
    parser.add_argument("--purge", action="store_true", help="also delete Istio's CRDs and the namespace")


async def _uninstall(args: argparse.Namespace) -> int:
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")
    demo = Values.for_profile("demo", namespace=args.namespace)  # the largest profile: every object any installs
    objs = [o for o in reversed(generate(values_from(args)) + generate(demo))]
    seen: set[tuple[str, str, str]] = set()
    conn = connect(kubeconfig, args.context)
    try:
        for obj in objs:
            if not args.purge and obj["kind"] in ("CustomResourceDefinition", "Namespace"):
                continue
            res, ns, name = resource_of(obj)
            if (res.plural, ns, name) in seen:
                continue
            seen.add((res.plural, ns, name))
            await conn.delete(res.path(ns, name))
            print(f"{obj['kind'].lower()}/{name}{' -n ' + ns if ns else ''} deleted", file=sys.stdout)
    finally:
        await conn.close()
    print(f"sailmesh uninstalled{' (purged)' if args.purge else ''}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_uninstall(args))
    except (KubeApiError, SailmeshError) as e:
        return fail(f"uninstall failed: {e}")
