"""`sailmesh get KIND [NAME] [-n NS|-A] [-l SELECTOR] [-o wide|yaml|json]`: config in the running mesh, as kubectl.

  sailmesh get virtualservices -A
  sailmesh get dr reviews -o yaml
  sailmesh get vs -l app=reviews -o wide
  sailmesh get workloads -A
  sailmesh get ns -L istio-injection            # the mesh's namespaces (NAME, STATUS, AGE, a label's column)
  sailmesh get pod reviews-v1-0 -o json         # a v1 Pod (a v1 List without NAME)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from sailmesh.cli.apiclient import call
from sailmesh.cli.common import add_state_dir, fail, print_table, running_mesh
from sailmesh.errors import PlatformError
from sailmesh.platform.state import InstanceRecord

if TYPE_CHECKING:
    from sailmesh.api.kinds import KindInfo

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
    "ratelimit": "RateLimit", "ratelimits": "RateLimit",
    "envoyfilter": "EnvoyFilter", "envoyfilters": "EnvoyFilter",
    # the Kubernetes Gateway API (its Gateway is KubernetesGateway inside sailmesh: api/kinds.py)
    "gateway.gateway.networking.k8s.io": "KubernetesGateway", "gateways.gateway.networking.k8s.io": "KubernetesGateway",
    "kubernetesgateway": "KubernetesGateway",
    "gatewayclass": "GatewayClass", "gatewayclasses": "GatewayClass", "gc": "GatewayClass",
    "httproute": "HTTPRoute", "httproutes": "HTTPRoute", "grpcroute": "GRPCRoute", "grpcroutes": "GRPCRoute",
    "tcproute": "TCPRoute", "tcproutes": "TCPRoute", "tlsroute": "TLSRoute", "tlsroutes": "TLSRoute",
    "referencegrant": "ReferenceGrant", "referencegrants": "ReferenceGrant", "refgrant": "ReferenceGrant",
    "backendtlspolicy": "BackendTLSPolicy", "backendtlspolicies": "BackendTLSPolicy", "btlspolicy": "BackendTLSPolicy",
    "all": "",
}


def kind_info(name: str) -> KindInfo | None:
    """The kind a user typed (alias, kind, plural, any case), as kubectl resolves it; None when there is none."""
    from sailmesh.api import kinds

    wanted = ALIASES.get(name.lower(), name).lower()
    for candidate in (wanted, wanted.removesuffix("s"), wanted.removesuffix("es")):
        found = next((k for k in kinds.KINDS if candidate in (k.kind.lower(), k.name.lower())), None)
        if found is not None:
            return found
    return None


def unknown_kind(name: str) -> str:
    """What to say of a kind nobody knows: the kinds there are (and that aliases work)."""
    from sailmesh.api import kinds

    known = ", ".join(sorted({k.kind for k in kinds.KINDS}))
    return f'unknown kind "{name}"; known kinds: {known} (and aliases such as vs, dr, gw)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="resource kind (vs, dr, gw, se, svc, ... or all), or workloads (the running "
                                     "instances of the embedded platform)")
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("-n", "--namespace", default="")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("-o", "--output", choices=("table", "wide", "yaml", "json"), default="table")
    parser.add_argument("-l", "--selector", default="",
                        help="label selector, kubectl's forms: app=reviews,version!=v1,canary (key exists)")
    parser.add_argument("-L", "--label-columns", action="append", default=[], metavar="KEY",
                        help="a column with each object's value of this label (namespaces: `get ns -L "
                             "istio-injection`, as Istio's docs use it)")
    parser.add_argument("--show-labels", action="store_true", help="a LABELS column (namespaces)")
    add_state_dir(parser)


# kubectl's columns: Istio's CRD additionalPrinterColumns (and core kinds' own), then AGE; `wide` adds the last group.
PRINTER_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "VirtualService": (("GATEWAYS", "spec.gateways"), ("HOSTS", "spec.hosts")),
    "DestinationRule": (("HOST", "spec.host"),),
    "ServiceEntry": (("HOSTS", "spec.hosts"), ("LOCATION", "spec.location"), ("RESOLUTION", "spec.resolution")),
    "WorkloadEntry": (("ADDRESS", "spec.address"),),
    "PeerAuthentication": (("MODE", "spec.mtls.mode"),),
    "AuthorizationPolicy": (("ACTION", "spec.action"),),
    "Service": (("PORT(S)", "spec.ports"),),
    "KubernetesGateway": (("CLASS", "spec.gatewayClassName"),),
    "HTTPRoute": (("HOSTNAMES", "spec.hostnames"),),
    "GatewayClass": (("CONTROLLER", "spec.controllerName"),),
}
WIDE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "Service": (("SELECTOR", "spec.selector"),),
    "PeerAuthentication": (("SELECTOR", "spec.selector.matchLabels"),),
    "AuthorizationPolicy": (("SELECTOR", "spec.selector.matchLabels"),),
}


def _value(doc: dict[str, Any], path: str) -> str:
    node: Any = doc
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if node is None or node == [] or node == {}:
        return "<none>" if path.endswith(("selector", "matchLabels")) else ""
    if isinstance(node, list) and node and isinstance(node[0], dict) and "port" in node[0]:  # Service ports
        return ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in node)
    if isinstance(node, list):
        return json.dumps(node, separators=(",", ":"))
    if isinstance(node, dict):
        return ",".join(f"{k}={v}" for k, v in node.items())
    return str(node)


def age(created: str, now: dt.datetime | None = None) -> str:
    """kubectl's AGE: 45s, 12m, 5h, 3d (from metadata.creationTimestamp)."""
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    secs = max(0, int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """kubectl's -l: comma-separated `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (absent); all must hold."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _not_enforced(body: dict[str, Any], items: list[dict[str, Any]]) -> list[str]:
    """The control plane's "accepted, not enforced" lines for the listed resources; computed here only when the
    control plane is older and does not send them (the generators then load, which takes a while)."""
    if isinstance(body.get("notes"), list):
        return [str(n) for n in body["notes"] if any(_names(n, it) for it in items)]
    from sailmesh.controlplane.live import resources as live_resources
    from sailmesh.generate.enforcement import not_enforced

    return [line for res in live_resources(items) for line in not_enforced(res)]


def _names(note: object, item: dict[str, Any]) -> bool:
    """Whether a note (`Kind ns/name: ...`) is about this item (a `-l` selector may have dropped others)."""
    meta = item.get("metadata") or {}
    ref = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    return str(note).startswith(f"{item.get('kind')} {ref}:")


def table_rows(items: list[dict[str, Any]], kind: str, wide: bool) -> list[tuple[str, ...]]:
    """kubectl's table: NAMESPACE, NAME, the kind's printer columns, AGE (KIND first when kinds are mixed)."""
    columns = (*PRINTER_COLUMNS.get(kind, ()), *(WIDE_COLUMNS.get(kind, ()) if wide else ())) if kind else ()
    head = ("KIND",) if not kind else ()
    rows: list[tuple[str, ...]] = [(*head, "NAMESPACE", "NAME", *(c for c, _ in columns), "AGE")]
    for it in items:
        meta = it.get("metadata", {})
        rows.append((*((str(it.get("kind", "")),) if not kind else ()), str(meta.get("namespace", "")),
                     str(meta.get("name", "")), *(_value(it, path) for _, path in columns),
                     age(str(meta.get("creationTimestamp", "")))))
    return rows


WORKLOADS = ("workloads", "workload", "wl")


def run(args: argparse.Namespace) -> int:
    if args.kind.lower() in WORKLOADS:
        return run_workloads(args)
    kind = ""  # `all`
    if ALIASES.get(args.kind.lower()) != "":
        info = kind_info(args.kind)
        if info is None:
            return fail(unknown_kind(args.kind))
        kind = info.name  # the store's name (KubernetesGateway for the Gateway API's Gateway)
    if kind == "Namespace":
        return run_namespaces(args)
    query = {"kind": kind, "name": args.name}
    if args.namespace and not args.all_namespaces:
        query["namespace"] = args.namespace
    try:
        mesh = running_mesh(args)
        status, body = call(mesh.api_url, "GET", "/api/v1/resources?" + urllib.parse.urlencode(query))
    except PlatformError as e:
        return fail(str(e))
    if status != 200:
        return fail("; ".join((body or {}).get("errors", [f"HTTP {status}"])))
    if kind == "Pod" and not body.get("items"):  # the platform's pods: workload instances (analyze counts them so)
        return run_pods(args, mesh)
    items = [it for it in body.get("items", [])
             if not args.selector or selector_matches(args.selector, (it.get("metadata") or {}).get("labels") or {})]
    if args.name and not items:
        return fail(f'{kind or "resource"} "{args.name}" not found')
    for line in _not_enforced(body, items):
        print(f"Note: {line}", file=sys.stderr)
    for key, where in sorted((body.get("shadowed") or {}).items()):  # as apply says it: which copy is in force
        print(f"Note: {key}: {where}", file=sys.stderr)
    if args.output == "yaml":
        import yaml  # only for -o yaml: a table needs none of it

        sys.stdout.write(yaml.safe_dump_all(items, sort_keys=False) if items else "")
    elif args.output == "json":
        print(json.dumps(items if not args.name else items[0], indent=2))
    else:
        if not items:
            print("No resources found.")
            return 0
        print_table(table_rows(items, kind, args.output == "wide"))
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
             and (not args.name or args.name in (i.name, i.workload))
             and (not args.selector or selector_matches(args.selector, dict(i.labels)))]
    insts.sort(key=lambda i: (i.namespace, i.name))
    items = [workload_item(i) for i in insts]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    if args.output == "yaml":
        import yaml

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


def _selects(args: argparse.Namespace, namespaced: bool = True) -> Any:
    """The predicate of NAME, -n/-A and -l over kubectl-shaped objects."""
    def selected(it: dict[str, Any]) -> bool:
        meta = it.get("metadata") or {}
        return ((not namespaced or args.all_namespaces or meta.get("namespace") == (args.namespace or "default"))
                and (not args.name or meta.get("name") == args.name)
                and (not args.selector or selector_matches(args.selector, meta.get("labels") or {})))
    return selected


def run_pods(args: argparse.Namespace, mesh: Any) -> int:
    """`get pods`: the embedded platform's instances (the `get workloads` table), or on a control plane without
    them (Kubernetes) the live view's Pods; `-o json|yaml` prints v1 Pods either way."""
    from sailmesh.cli import namespaces

    try:
        if args.output in ("json", "yaml"):
            return namespaces.run_pods(args, mesh, _selects(args))
        if mesh.instances:
            return run_workloads(args)
        found = [p for p in namespaces.pods(mesh) if _selects(args)(p)]
    except PlatformError as e:
        return fail(str(e))
    if args.name and not found:
        return fail(f'pods "{args.name}" not found')
    if not found:
        print("No resources found.")
        return 0
    rows: list[tuple[str, ...]] = [("NAMESPACE", "NAME", "ADDRESS", "SERVICE ACCOUNT", "SIDECAR", "LABELS")]
    for p in found:
        meta = p.get("metadata") or {}
        labels = ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or "<none>"
        rows.append((str(meta.get("namespace", "")), str(meta.get("name", "")),
                     str((p.get("status") or {}).get("podIP", "")),
                     str((p.get("spec") or {}).get("serviceAccountName", "default")),
                     "true" if namespaces.has_sidecar(p) else "false", labels))
    print_table(rows if args.all_namespaces else [r[1:] for r in rows])
    return 0


def run_namespaces(args: argparse.Namespace) -> int:
    """`get ns [NAME]`: the namespaces of the mesh's workloads, services, config and proxies, as kubectl lists
    them (NAME, STATUS, AGE; `--show-labels`' labels under -o wide)."""
    from sailmesh.cli import namespaces

    try:
        found = [n for n in namespaces.namespaces(running_mesh(args))[0] if _selects(args, namespaced=False)(n)]
    except PlatformError as e:
        return fail(str(e))
    if args.name and not found:
        return fail(f'namespaces "{args.name}" not found')
    if args.output in ("json", "yaml"):
        namespaces.print_objects(found, args.output, bool(args.name))
        return 0
    if not found:
        print("No resources found.")
        return 0
    shown = args.show_labels or args.output == "wide"
    keys = [k for group in args.label_columns for k in group.split(",") if k]
    rows: list[tuple[str, ...]] = [("NAME", "STATUS", "AGE", *(k.upper() for k in keys),
                                    *(("LABELS",) if shown else ()))]
    for n in found:
        meta = n.get("metadata") or {}
        have = meta.get("labels") or {}
        labels = ",".join(f"{k}={v}" for k, v in sorted(have.items())) or "<none>"
        rows.append((str(meta.get("name")), str((n.get("status") or {}).get("phase", "Active")),
                     age(str(meta.get("creationTimestamp", ""))), *(str(have.get(k, "")) for k in keys),
                     *((labels,) if shown else ())))
    print_table(rows)
    return 0
