"""`sailmesh get KIND [NAME] [-n NS] [-o yaml|json]`: list config in the running mesh, like kubectl get."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

import yaml

from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, running_mesh
from sailmesh.errors import PlatformError
from sailmesh.platform.state import InstanceRecord

ALIASES = {
    "vs": "VirtualService", "virtualservice": "VirtualService", "virtualservices": "VirtualService",
    "dr": "DestinationRule", "destinationrule": "DestinationRule", "destinationrules": "DestinationRule",
    "gw": "Gateway", "gateway": "Gateway", "gateways": "Gateway",
    "se": "ServiceEntry", "serviceentry": "ServiceEntry", "serviceentries": "ServiceEntry",
    "sidecar": "Sidecar", "sidecars": "Sidecar",
    "we": "WorkloadEntry", "workloadentry": "WorkloadEntry", "workloadentries": "WorkloadEntry",
    "wg": "WorkloadGroup", "workloadgroup": "WorkloadGroup", "workloadgroups": "WorkloadGroup",
    "pa": "PeerAuthentication", "peerauthentication": "PeerAuthentication", "peerauthentications": "PeerAuthentication",
    "ap": "AuthorizationPolicy", "authorizationpolicy": "AuthorizationPolicy",
    "authorizationpolicies": "AuthorizationPolicy",
    "ra": "RequestAuthentication", "requestauthentication": "RequestAuthentication",
    "requestauthentications": "RequestAuthentication",
    "telemetry": "Telemetry", "telemetries": "Telemetry",
    "svc": "Service", "service": "Service", "services": "Service",
    "ns": "Namespace", "namespace": "Namespace", "namespaces": "Namespace",
    "sa": "ServiceAccount", "serviceaccount": "ServiceAccount", "serviceaccounts": "ServiceAccount",
    "localworkload": "LocalWorkload", "localworkloads": "LocalWorkload", "lw": "LocalWorkload",
    "envoyfilter": "EnvoyFilter", "envoyfilters": "EnvoyFilter",
    "all": "",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="resource kind (vs, dr, gw, se, svc, ... or all), or workloads (the running "
                                     "instances of the embedded platform)")
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("-n", "--namespace", default="")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    add_state_dir(parser)


WORKLOADS = ("workloads", "workload", "wl")


def run(args: argparse.Namespace) -> int:
    if args.kind.lower() in WORKLOADS:
        return run_workloads(args)
    kind = ALIASES.get(args.kind.lower(), args.kind)
    query = {"kind": kind, "name": args.name}
    if args.namespace and not args.all_namespaces:
        query["namespace"] = args.namespace
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "GET", "/api/v1/resources?" + urllib.parse.urlencode(query),
                            token=mesh.api_token())
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        return fail("; ".join((body or {}).get("errors", [f"HTTP {status}"])))
    items = body.get("items", [])
    if args.name and not items:
        return fail(f'{kind or "resource"} "{args.name}" not found')
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump_all(items, sort_keys=False) if items else "")
    elif args.output == "json":
        print(json.dumps(items if not args.name else items[0], indent=2))
    else:
        if not items:
            print("No resources found.")
            return 0
        rows = [("KIND", "NAMESPACE", "NAME")]
        for it in items:
            meta = it.get("metadata", {})
            rows.append((it.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def workload_item(inst: InstanceRecord) -> dict[str, Any]:
    """One instance as `get workloads -o json|yaml` shows it."""
    return {
        "namespace": inst.namespace,
        "name": inst.name,
        "workload": inst.workload,
        "labels": dict(inst.labels),
        "address": inst.address,
        "ports": [dict(p) for p in inst.ports],
        "serviceAccount": inst.service_account,
        "sidecar": inst.sidecar,
    }


def _port_text(inst: InstanceRecord) -> str:
    return ",".join(f"{p.get('containerPort')}/{p.get('protocol', 'HTTP')}" for p in inst.ports) or "<none>"


def run_workloads(args: argparse.Namespace) -> int:
    """`get workloads [NAME] [-n NS|-A] [-o table|json|yaml]`: every instance the embedded platform runs (read from
    the running mesh's state file, not from the control plane)."""
    try:
        mesh = running_mesh(args)
    except PlatformError as e:
        return fail(str(e))
    insts = [i for i in mesh.instances
             if (args.all_namespaces or i.namespace == (args.namespace or "default"))
             and (not args.name or args.name in (i.name, i.workload))]
    insts.sort(key=lambda i: (i.namespace, i.name))
    items = [workload_item(i) for i in insts]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(items, sort_keys=False) if items else "")
        return 0
    if not insts:
        where = "" if args.all_namespaces else f" in {args.namespace or 'default'} namespace"
        print(f"No resources found{where}.")
        return 0
    rows: list[tuple[str, ...]] = [("NAMESPACE", "NAME", "ADDRESS", "PORTS", "SERVICE ACCOUNT", "SIDECAR", "LABELS")]
    for i in insts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(i.labels.items())) or "<none>"
        rows.append((i.namespace, i.name, i.address, _port_text(i), i.service_account,
                     "true" if i.sidecar else "false", labels))
    if not args.all_namespaces:
        rows = [r[1:] for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
