"""Namespaces and Pods of the running mesh as kubectl shows them: `get ns`, `describe ns NAME`, `get pods -o json`.

The embedded mesh has no Namespace or Pod objects: its namespaces are those its workloads, services, config and
connected proxies are in, each labelled `istio-injection=enabled|disabled` as the control plane's live view says
(`/api/v1/live`, what `analyze` reads; on Kubernetes the live view carries the API server's Namespaces with their
own labels), and its pods are the workload instances the platform runs (the mesh's
state file) or, for a control plane without one (on Kubernetes), the live view's Pods. A namespace's age is the
age of the oldest object in it (kubectl's AGE of a Namespace is its own creation; the embedded mesh creates none).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from sailmesh.cli.apiclient import call
from sailmesh.errors import PlatformError
from sailmesh.platform.state import InstanceRecord, MeshState

PROXY_CONTAINER = "istio-proxy"  # controlplane.live's (that module loads the analyzers)
ROOT_NAMESPACE = "istio-system"  # settings.MeshSettings.root_namespace's default: mesh-wide policy lives there


def live_items(mesh: MeshState) -> list[dict[str, Any]]:
    """The control plane's live view: config in force, workloads as Pods, their Namespaces."""
    status, body = call(mesh.api_url, "GET", "/api/v1/live")
    if status != 200 or not isinstance(body, dict):
        raise PlatformError(f"the control plane answered HTTP {status}: {(body or {}).get('errors')}")
    return list(body.get("items", []))


def connected_proxies(mesh: MeshState) -> list[tuple[str, str, str]]:
    """(namespace, name, type) of each connected proxy (gateways included: they are no workload of the live
    view); [] when the control plane does not say."""
    status, body = call(mesh.api_url, "GET", "/debug/syncz")
    if status != 200 or not isinstance(body, list):
        return []
    out = []
    for p in body:
        name, _, ns = str(p.get("name", "")).rpartition(".")
        if name and ns:
            out.append((ns, name, str(p.get("type", ""))))
    return sorted(out)


def _meta(item: dict[str, Any]) -> dict[str, Any]:
    meta = item.get("metadata")
    return meta if isinstance(meta, dict) else {}


def namespace_objects(items: list[dict[str, Any]], more: Iterable[str] = (), started: str = "") -> list[dict[str, Any]]:
    """Every namespace of the live view (and `more`) as a v1 Namespace (the config's own Namespace objects as they
    are); created with its oldest object, else when the mesh `started`."""
    own = {str(_meta(it).get("name")): it for it in items if it.get("kind") == "Namespace"}
    oldest: dict[str, str] = {}
    for it in items:
        ns, created = str(_meta(it).get("namespace") or ""), str(_meta(it).get("creationTimestamp") or "")
        if ns:
            oldest.setdefault(ns, "")
            if created and (not oldest[ns] or created < oldest[ns]):
                oldest[ns] = created
    for ns in more:
        oldest.setdefault(ns, "")
    out = []
    for name in sorted(set(oldest) | set(own)):
        doc = own.get(name) or {}
        meta = {"name": name, **_meta(doc)}
        if not meta.get("creationTimestamp") and (oldest.get(name) or started):
            meta["creationTimestamp"] = oldest.get(name) or started
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta,
                    "spec": doc.get("spec") or {"finalizers": ["kubernetes"]},
                    "status": doc.get("status") or {"phase": "Active"}})
    return out


def namespaces(mesh: MeshState) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str, str]]]:
    """(the Namespaces, the live view they come from, the connected proxies)."""
    items, proxies = live_items(mesh), connected_proxies(mesh)
    more = [*(p[0] for p in proxies), *(i.namespace for i in mesh.instances)]
    return namespace_objects(items, more, mesh_started(mesh)), items, proxies


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """kubectl's `-o json|yaml` of several objects: a v1 List."""
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def print_objects(items: list[dict[str, Any]], output: str, one: bool) -> None:
    """`-o json|yaml` as kubectl: the object itself for `get KIND NAME`, else a v1 List."""
    data: Any = items[0] if one and len(items) == 1 else as_list(items)
    if output == "json":
        print(json.dumps(data, indent=4))
    else:
        import yaml  # only for -o yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def instance_pod(inst: InstanceRecord, created: str = "") -> dict[str, Any]:
    """A workload instance of the embedded platform as the v1 Pod kubectl users expect (its app container with
    its ports, an `istio-proxy` container when it has a sidecar, as injection adds it)."""
    app = inst.labels.get("app", inst.workload or inst.name)
    containers: list[dict[str, Any]] = [{
        "name": app, "image": "local",
        "ports": [{k: v for k, v in (("name", p.get("name")), ("containerPort", p.get("containerPort")),
                                     ("protocol", "TCP")) if v} for p in inst.ports]}]
    annotations = {}
    if inst.sidecar:
        containers.append({"name": PROXY_CONTAINER, "image": "sailmesh/agent"})
        annotations["sidecar.istio.io/status"] = json.dumps({"containers": [PROXY_CONTAINER]},
                                                            separators=(",", ":"))
    else:
        annotations["sidecar.istio.io/inject"] = "false"
    meta: dict[str, Any] = {"name": inst.name, "namespace": inst.namespace, "labels": dict(inst.labels),
                            "annotations": annotations}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"serviceAccountName": inst.service_account, "containers": containers},
            "status": {"phase": "Running", "podIP": inst.address, "podIPs": [{"ip": inst.address}]}}


def mesh_started(mesh: MeshState) -> str:
    """When the embedded mesh's supervisor started (RFC 3339), "" when unknown (its pods' creation time)."""
    if not mesh.supervisor_start_time:
        return ""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        when = boot + mesh.supervisor_start_time / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return ""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pods(mesh: MeshState) -> list[dict[str, Any]]:
    """Every pod of the mesh as a v1 Pod: the embedded platform's instances, else the live view's Pods."""
    if mesh.instances:
        started = mesh_started(mesh)
        return [instance_pod(i, started) for i in mesh.instances]
    return [it for it in live_items(mesh) if it.get("kind") == "Pod"]


def has_sidecar(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(c.get("name") == PROXY_CONTAINER for c in [*(spec.get("containers") or ()),
                                                        *(spec.get("initContainers") or ())])


def run_pods(args: argparse.Namespace, mesh: MeshState, selected: Any) -> int:
    """`get pods [NAME] -o json|yaml`: v1 Pods (a v1 List without NAME)."""
    found = [p for p in pods(mesh) if selected(p)]
    found.sort(key=lambda p: (_meta(p).get("namespace", ""), _meta(p).get("name", "")))
    if args.name and not found:
        print(f'error: pods "{args.name}" not found', file=sys.stderr)
        return 1
    print_objects(found, args.output, bool(args.name))
    return 0


def _selector(spec: dict[str, Any]) -> str:
    sel = spec.get("selector") or spec.get("workloadSelector") or {}
    labels = sel.get("matchLabels") or sel.get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _of(items: list[dict[str, Any]], kind: str, namespace: str) -> list[dict[str, Any]]:
    return sorted((it for it in items if it.get("kind") == kind and _meta(it).get("namespace") == namespace),
                  key=lambda it: str(_meta(it).get("name")))


def _ref(it: dict[str, Any]) -> str:
    return f"{_meta(it).get('namespace')}/{_meta(it).get('name')}"


def _peer_authentication(items: list[dict[str, Any]], ns: str, root: str) -> list[str]:
    """The namespace's mTLS mode and where it comes from (Istio: the namespace's selector-less
    PeerAuthentication, else the root namespace's, else PERMISSIVE), then its workload-level ones."""
    def mode(it: dict[str, Any]) -> str:
        return str(((it.get("spec") or {}).get("mtls") or {}).get("mode") or "UNSET")

    own = [p for p in _of(items, "PeerAuthentication", ns) if not _selector(p.get("spec") or {})]
    mesh = [p for p in _of(items, "PeerAuthentication", root) if not _selector(p.get("spec") or {})]
    if own and mode(own[0]) != "UNSET":
        lines = [f"  mTLS (PeerAuthentication): {mode(own[0])}, from PeerAuthentication {_ref(own[0])}"]
    elif mesh and mode(mesh[0]) != "UNSET":
        lines = [f"  mTLS (PeerAuthentication): {mode(mesh[0])}, mesh-wide from PeerAuthentication {_ref(mesh[0])}"]
    else:
        lines = ["  mTLS (PeerAuthentication): PERMISSIVE (Istio's default: no PeerAuthentication for the "
                 "namespace or the mesh)"]
    for p in _of(items, "PeerAuthentication", ns):
        sel = _selector(p.get("spec") or {})
        if sel:
            lines.append(f"    workload PeerAuthentication {_ref(p)}: {mode(p)} for {sel}")
    return lines


def _sidecars(items: list[dict[str, Any]], ns: str, root: str) -> list[str]:
    own = _of(items, "Sidecar", ns)
    default = [s for s in own if not _selector(s.get("spec") or {})]
    mesh = [s for s in _of(items, "Sidecar", root) if not _selector(s.get("spec") or {})]
    if default:
        lines = [f"  Sidecar: {_ref(default[0])} (the namespace's default)"]
    elif mesh:
        lines = [f"  Sidecar: {_ref(mesh[0])} (mesh-wide, from the root namespace)"]
    else:
        lines = ["  Sidecar: none (every proxy sees every service it may reach)"]
    lines += [f"    workload Sidecar {_ref(s)} for {_selector(s.get('spec') or {})}"
              for s in own if _selector(s.get("spec") or {})]
    return lines


def _policies(items: list[dict[str, Any]], kind: str, title: str, ns: str, root: str) -> list[str]:
    found = [*_of(items, kind, ns), *(_of(items, kind, root) if root != ns else [])]
    if not found:
        return [f"  {title}: <none>"]
    lines = [f"  {title}:"]
    for it in found:
        spec = it.get("spec") or {}
        action = f"{spec.get('action', 'ALLOW')}, " if kind == "AuthorizationPolicy" else ""
        scope = ("mesh-wide (root namespace)" if _meta(it).get("namespace") == root != ns
                 else f"workloads {_selector(spec)}" if _selector(spec) else "every workload")
        lines.append(f"    {_ref(it)}: {action}{scope}")
    return lines


def describe(ns_obj: dict[str, Any], items: list[dict[str, Any]], pod_list: list[dict[str, Any]],
             proxies: Iterable[tuple[str, str, str]] = (), root: str = ROOT_NAMESPACE) -> list[str]:
    """`describe ns NAME`: kubectl's head (name, labels, annotations, status), then what applies there."""
    from sailmesh.cli.get import age

    meta = _meta(ns_obj)
    name = str(meta.get("name"))

    def pairs(title: str, values: Any) -> list[str]:
        got = sorted(f"{k}={v}" for k, v in (values or {}).items())
        return [f"{title + ':':<13}{got[0] if got else '<none>'}", *(f"{'':13}{g}" for g in got[1:])]

    lines = [f"{'Name:':<13}{name}", *pairs("Labels", meta.get("labels")),
             *pairs("Annotations", meta.get("annotations")),
             f"{'Status:':<13}{(ns_obj.get('status') or {}).get('phase', 'Active')}",
             f"{'Age:':<13}{age(str(meta.get('creationTimestamp', '')))}", "", "Mesh policy:"]
    lines += _peer_authentication(items, name, root)
    lines += _sidecars(items, name, root)
    lines += _policies(items, "AuthorizationPolicy", "AuthorizationPolicies", name, root)
    lines += _policies(items, "RequestAuthentication", "RequestAuthentications", name, root)
    here = [p for p in pod_list if _meta(p).get("namespace") == name]
    lines.append("Workloads (pods):" + ("" if here else "  <none>"))
    for p in sorted(here, key=lambda p: str(_meta(p).get("name"))):
        labels = ",".join(f"{k}={v}" for k, v in sorted((_meta(p).get("labels") or {}).items())) or "<none>"
        lines.append(f"  {_meta(p).get('name')}  {(p.get('status') or {}).get('podIP', '')}  "
                     f"sidecar: {'yes' if has_sidecar(p) else 'no'}  service account: "
                     f"{(p.get('spec') or {}).get('serviceAccountName', 'default')}  {labels}")
    gateways = [f"{n} ({t})" for ns, n, t in proxies if ns == name and t != "sidecar"]
    if gateways:
        lines.append(f"Gateways:    {', '.join(gateways)}")
    services = [str(_meta(s).get("name")) for s in _of(items, "Service", name)]
    lines.append(f"Services:    {', '.join(services) or '<none>'}")
    counts: dict[str, int] = {}
    for it in items:
        if _meta(it).get("namespace") == name and it.get("kind") not in ("Pod", "Service", "Namespace"):
            counts[str(it.get("kind"))] = counts.get(str(it.get("kind")), 0) + 1
    lines.append("Config:      " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "<none>"))
    return lines
