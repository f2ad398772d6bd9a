"""`sailmesh describe KIND NAME [-n NS]`: kubectl's describe for the running mesh's config and workloads.

  sailmesh describe vs reviews                   # the VirtualService, the analyzers' messages about it, its notes
  sailmesh describe dr reviews -n default
  sailmesh describe service reviews              # a Service or a workload: what applies to it (as `x describe`)
  sailmesh describe pod reviews-v1-0
  sailmesh describe ns default                   # the namespace, its mTLS mode, Sidecar, policies and workloads

A Service or a workload (pod) is described as `sailmesh x describe` describes it (VirtualServices, subsets,
gateways, mTLS mode, policies, warnings). Any other kind as kubectl shows it: name, namespace, labels,
annotations, age and spec, then what the mesh says about it: the analyzers' messages (kubectl's Events have no
counterpart here), fields accepted but not enforced, and which copy is in force when a watched directory also
defines it.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from sailmesh.api.resource import DEFAULT_NAMESPACE
from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.cli.get import age, kind_info, unknown_kind
from sailmesh.errors import PlatformError

WORKLOAD_WORDS = {"service": "service", "services": "service", "svc": "service",
                  "workload": "workload", "workloads": "workload", "pod": "workload", "pods": "workload"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="resource kind (vs, dr, gw, ...), or service / pod (workload)")
    parser.add_argument("name")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    add_state_dir(parser)


def _map(title: str, values: Any) -> list[str]:
    if not isinstance(values, dict) or not values:
        return [f"{title + ':':<13}<none>"]
    items = sorted(f"{k}={v}" for k, v in values.items())
    return [f"{title + ':':<13}{items[0]}", *(f"{'':13}{i}" for i in items[1:])]


def render(item: dict[str, Any], body: dict[str, Any], messages: list[dict[str, str]]) -> list[str]:
    """One resource as kubectl describe prints it, then what the mesh says about it."""
    import yaml  # the spec's YAML: only this command needs it

    meta = item.get("metadata") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    key = f"{item.get('kind')} {ns}/{name}" if ns else f"{item.get('kind')} {name}"
    lines = [f"{'Name:':<13}{name}", *([f"{'Namespace:':<13}{ns}"] if ns else []),
             *_map("Labels", meta.get("labels")), *_map("Annotations", meta.get("annotations")),
             f"{'API Version:':<13}{item.get('apiVersion', '')}", f"{'Kind:':<13}{item.get('kind', '')}",
             f"{'Age:':<13}{age(str(meta.get('creationTimestamp', '')))}"]
    for part in ("spec", "status"):
        if item.get(part):
            lines.append(f"{part.capitalize()}:")
            lines += ["  " + line for line in yaml.safe_dump(item[part], sort_keys=False).rstrip().splitlines()]
    said = [m["text"] for m in messages if m.get("resource") == key]
    said += [str(n) for n in body.get("notes") or [] if str(n).startswith(key + ":")]
    said += [f"{k}: {v}" for k, v in sorted((body.get("shadowed") or {}).items()) if k == key]
    lines.append("Analysis:" + ("" if said else "  <none>"))
    lines += [f"  {s}" for s in said]
    return lines


def run(args: argparse.Namespace) -> int:
    what = WORKLOAD_WORDS.get(args.kind.lower())
    if what is not None:  # a Service or a workload: what applies to it
        from sailmesh.cli import describe

        return describe.run(argparse.Namespace(**{**vars(args), "what": what}))
    info = kind_info(args.kind)
    if info is None:
        return fail(unknown_kind(args.kind))
    if info.kind == "Namespace":
        return describe_namespace(args)
    query = {"kind": info.name, "name": args.name, **({"namespace": args.namespace} if info.namespaced else {})}
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "GET", "/api/v1/resources?" + urllib.parse.urlencode(query))
        if status != 200:
            return fail("; ".join((body or {}).get("errors", [f"HTTP {status}"])))
        if not body.get("items"):
            query.pop("name")
            _, others = call(mesh.api_url, "GET", "/api/v1/resources?" + urllib.parse.urlencode(query))
            names = sorted(str((it.get("metadata") or {}).get("name")) for it in (others or {}).get("items", []))
            where = f" in namespace {args.namespace}" if info.namespaced else ""
            return fail(f'{info.kind} "{args.name}" not found{where}; there: {", ".join(names) or "none"}')
        status, found = call(mesh.api_url, "GET", "/api/v1/analysis")
    except PlatformError as e:
        return fail(str(e))
    messages = list(found.get("items", [])) if status == 200 and isinstance(found, dict) else []
    sys.stdout.write("\n".join(render(body["items"][0], body, messages)) + "\n")
    return 0


def describe_namespace(args: argparse.Namespace) -> int:
    """`describe ns NAME`: the namespace as kubectl shows it, then the PeerAuthentication, Sidecar,
    AuthorizationPolicies and RequestAuthentications that apply there, its workloads, services and config."""
    from sailmesh.cli import namespaces

    try:
        mesh = running_mesh(args)
        found, items, proxies = namespaces.namespaces(mesh)
        ns = next((n for n in found if (n.get("metadata") or {}).get("name") == args.name), None)
        if ns is None:
            there = ", ".join(str((n.get("metadata") or {}).get("name")) for n in found)
            return fail(f'namespaces "{args.name}" not found; there: {there or "none"}')
        pods = namespaces.pods(mesh) if mesh.instances else [it for it in items if it.get("kind") == "Pod"]
    except PlatformError as e:
        return fail(str(e))
    sys.stdout.write("\n".join(namespaces.describe(ns, items, pods, proxies)) + "\n")
    return 0
