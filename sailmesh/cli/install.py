"""`sailmesh install [--profile minimal|default|demo]`: apply the control plane and Istio's CRDs to a cluster.

Examples:
  sailmesh install --profile demo                  # the current kubeconfig context ($KUBECONFIG, ~/.kube/config)
  sailmesh install --kubeconfig k.yaml --webhook-url https://10.0.0.5:15017   # control plane outside the cluster
  sailmesh manifest generate --profile demo | kubectl apply --server-side -f -   # the same, by hand

Objects are applied server-side (field manager `sailmesh`, conflicts forced, as `istioctl install` owns what it
installs); the CRDs are waited for until Established before anything else is applied.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import yaml

from sailmesh.cli.common import fail
from sailmesh.errors import SailmeshError
from sailmesh.install.manifests import PROFILES, Values, generate
from sailmesh.platform.kube.client import KubeApiError, KubeConnection, connect
from sailmesh.platform.kube.informer import KubeResource

FIELD_MANAGER = "sailmesh"
# (apiVersion, kind) -> where objects of that kind live in the API
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("customresourcedefinitions", False),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): ("validatingwebhookconfigurations", False),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): ("mutatingwebhookconfigurations", False),
}


def resource_of(obj: dict[str, Any]) -> tuple[KubeResource, str, str]:
    """(resource, namespace, name) of a manifest object."""
    api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
    found = RESOURCES.get((api_version, kind))
    if found is None:
        raise SailmeshError(f"cannot apply {api_version} {kind}: not a kind the install uses")
    plural, namespaced = found
    group, _, version = api_version.rpartition("/")
    meta = obj.get("metadata") or {}
    return (KubeResource(group, version, plural, kind, namespaced), str(meta.get("namespace") or ""),
            str(meta.get("name")))


def add_common(parser: argparse.ArgumentParser) -> None:
    """The flags install, uninstall and manifest generate share."""
    parser.add_argument("--profile", choices=PROFILES, default="default", help="Istio's profile names")
    parser.add_argument("--namespace", default="istio-system", help="the control plane's namespace")
    parser.add_argument("--image", default=Values().image, help="the control plane's and proxies' image")
    parser.add_argument("--webhook-url", default="", metavar="URL",
                        help="call the webhooks at this base URL (a control plane outside the cluster) instead of "
                             "through Service istiod")


def add_settings(parser: argparse.ArgumentParser) -> None:
    """install's and manifest generate's `--set` (what uninstall deletes does not depend on it)."""
    parser.add_argument("--set", dest="settings", action="append", default=[], type=install_setting,
                        metavar="values.pilot.env.NAME=VALUE",
                        help="an environment variable of the control plane, istioctl's syntax (repeatable), e.g. "
                             "values.pilot.env.PILOT_ENABLE_STATUS=true")


PILOT_ENV = "values.pilot.env."
# Istio's value paths that its chart turns into istiod's environment
ENV_VALUES = {"values.global.istiod.enableAnalysis": "PILOT_ENABLE_ANALYSIS"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def install_setting(text: str) -> tuple[str, str]:
    """One `--set PATH=VALUE` (istioctl's flag) as an environment variable of the control plane: Istio's
    `values.pilot.env.NAME` and `values.global.istiod.enableAnalysis` (PILOT_ENABLE_ANALYSIS); other paths refused."""
    path, eq, value = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"{text!r}: want PATH=VALUE")
    if path in ENV_VALUES:
        return ENV_VALUES[path], value
    if not path.startswith(PILOT_ENV):
        raise argparse.ArgumentTypeError(
            f"{path!r}: only {PILOT_ENV}NAME and {', '.join(ENV_VALUES)} are supported (the control plane's "
            "environment); other install values are flags of this command")
    name = path[len(PILOT_ENV):]
    if not ENV_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{path!r}: {name!r} is not an environment variable name")
    return name, value


def values_from(args: argparse.Namespace) -> Values:
    return Values.for_profile(args.profile, namespace=args.namespace, image=args.image, webhook_url=args.webhook_url,
                              pilot_env=tuple(getattr(args, "settings", ())))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    add_settings(parser)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", "~/.kube/config"), metavar="PATH")
    parser.add_argument("--context", default=None, help="the kubeconfig context (default: its current one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the CRDs")


async def apply_objects(conn: KubeConnection, objs: Iterable[dict[str, Any]], timeout_s: float = 120.0,
                        out: Any = None) -> int:
    """Server-side apply each object in order; after the last CRD, wait until every CRD is Established."""
    objs = list(objs)
    last_crd = max((i for i, o in enumerate(objs) if o.get("kind") == "CustomResourceDefinition"), default=-1)
    for i, obj in enumerate(objs):
        res, ns, name = resource_of(obj)
        await conn.send_json("PATCH", res.path(ns, name), obj, content_type="application/apply-patch+yaml",
                             params={"fieldManager": FIELD_MANAGER, "force": "true"})
        if out is not None:
            print(f"{obj['kind'].lower()}/{name}{' -n ' + ns if ns else ''} applied", file=out)
        if i == last_crd:
            await wait_established(conn, [o for o in objs[: i + 1] if o.get("kind") == "CustomResourceDefinition"],
                                   timeout_s)
    return len(objs)


async def wait_established(conn: KubeConnection, crds: list[dict[str, Any]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = [str(c["metadata"]["name"]) for c in crds]
    while pending:
        res = KubeResource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                           False)
        still = []
        for name in pending:
            got = await conn.get_json(res.path(name=name))
            conds = (got.get("status") or {}).get("conditions") or ()
            if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                still.append(name)
        pending = still
        if pending and time.monotonic() > deadline:
            raise SailmeshError(f"CRDs not Established within {timeout_s:.0f}s: {', '.join(pending)}")
        if pending:
            await asyncio.sleep(0.2)


async def _install(args: argparse.Namespace) -> int:
    conn = connect(args.kubeconfig, args.context)
    try:
        n = await apply_objects(conn, generate(values_from(args)), args.timeout, out=sys.stdout)
    finally:
        await conn.close()
    print(f"sailmesh installed: profile {args.profile}, {n} objects", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_install(args))
    except KubeApiError as e:
        return fail(f"install failed: {e}")
    except SailmeshError as e:
        return fail(f"install failed: {e}")


def dump_yaml(objs: Iterable[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML text."""
    return "---\n".join(yaml.dump(o, Dumper=yaml.CSafeDumper, sort_keys=False, width=1000) for o in objs)
