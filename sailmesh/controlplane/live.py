"""The live mesh as the analyzers see it: config in force plus each workload as a Pod and its Namespace.

`istioctl analyze` reads a cluster's Pods and Namespaces; the embedded mesh has workloads instead. Each workload
becomes a Pod with its labels and service account, with an `istio-proxy` container when its sidecar is connected
(and `sidecar.istio.io/inject: "false"` when it has none, which is how the user chose it), so subset and selector
checks (IST0173, ...) see the pods that really run. A Namespace is labelled `istio-injection=enabled` when one of
its workloads has a sidecar, `disabled` otherwise, unless the config defines the Namespace itself or the platform
has it (Kubernetes: the API server's Namespace with its own labels).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sailmesh.analysis.diagnostic import Diagnostic, at_least
from sailmesh.analysis.registry import analyze
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey, Source
from sailmesh.registry.model import Workload

# A live resource has no file: its analyzer messages name it as istioctl names a cluster's resource,
# `(VirtualService default/reviews)`, without the file:line a resource read from a file gets.
LIVE_SOURCE = ""
PROXY_CONTAINER = "istio-proxy"


def workload_pod(w: Workload, has_proxy: bool) -> dict[str, Any]:
    """A workload as the Pod `istioctl analyze` would read."""
    containers: list[dict[str, Any]] = [{"name": w.labels.get("app", w.name), "image": "local"}]
    annotations: dict[str, str] = {}
    if has_proxy:
        containers.append({"name": PROXY_CONTAINER, "image": "sailmesh/agent"})
        annotations["sidecar.istio.io/status"] = '{"containers":["istio-proxy"]}'
    else:
        annotations["sidecar.istio.io/inject"] = "false"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": dict(w.labels), "annotations": annotations},
        "spec": {"serviceAccountName": w.service_account, "containers": containers},
        "status": {"podIP": w.address, "phase": "Running" if w.healthy else "Pending"},
    }


def live_documents(config: Iterable[Resource], workloads: Iterable[Workload], proxied_ips: Collection[str],
                   namespaces: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Config in force plus the workloads as Pods and their Namespaces (raw documents, as `get -o json` shows).
    `namespaces`: the platform's own Namespace objects (Kubernetes'), shown as they are instead of inferred."""
    config = list(config)
    docs = [document(r) for r in config]
    have = {r.key for r in config}
    for ns_obj in namespaces:
        name = str((ns_obj.get("metadata") or {}).get("name") or "")
        if name and ResourceKey("Namespace", "", name) not in have:
            have.add(ResourceKey("Namespace", "", name))
            docs.append({"apiVersion": "v1", "kind": "Namespace", **{k: v for k, v in ns_obj.items()
                                                                      if k in ("metadata", "spec", "status")}})
    injected: dict[str, bool] = {}
    for w in workloads:
        has_proxy = w.address in proxied_ips
        injected[w.namespace] = injected.get(w.namespace, False) or has_proxy
        if ResourceKey("Pod", w.namespace, w.name) not in have:
            docs.append(workload_pod(w, has_proxy))
    for ns, on in sorted(injected.items()):
        if ResourceKey("Namespace", "", ns) not in have:
            docs.append({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": {"istio-injection": "enabled" if on else "disabled"}}})
    return docs


def document(r: Resource) -> dict[str, Any]:
    """A resource as a document with its name and namespace in metadata."""
    doc = dict(r.raw) or {"apiVersion": r.api_version, "kind": r.kind, "spec": dict(r.spec)}
    meta = dict(doc.get("metadata") or {})
    meta.setdefault("name", r.name)
    if r.namespace:
        meta.setdefault("namespace", r.namespace)
    doc["metadata"] = meta
    return doc


def resources(docs: Iterable[Mapping[str, Any]]) -> list[Resource]:
    """Documents back to resources (as the analyzers read them)."""
    return [resource_from_dict(dict(d), Source(LIVE_SOURCE)) for d in docs]


def warnings_for(keys: Collection[ResourceKey], docs: Iterable[Mapping[str, Any]],
                 mesh_config: Mapping[str, Any]) -> list[str]:
    """Analyzer messages (Warning and above) about the given resources, in the live mesh that now holds them.

    What `apply` prints: Istio's validating webhook admits such config and warns; so does sailmesh.
    """
    diags: list[Diagnostic] = analyze(resources(docs), mesh_config)
    return [d.render() for d in diags
            if d.resource is not None and d.resource.key in keys and at_least(d.level, "Warning")]


def messages(docs: Iterable[Mapping[str, Any]], mesh_config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Analyzer messages (Warning and above) about the live mesh, each with the resource it is about: what
    `x describe` shows, served by the control plane so the CLI need not load the analyzers."""
    return [{"resource": str(d.resource.key), "level": d.level, "text": d.render()}
            for d in analyze(resources(docs), mesh_config) if d.resource is not None and at_least(d.level, "Warning")]
