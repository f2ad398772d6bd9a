"""Offline injection (`sailmesh kube-inject`, istioctl kube-inject): the webhook's mutation applied to manifests.

Every document of a (multi-document) YAML text is returned in order; Pods and the pod templates of Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and ReplicationControllers are injected, everything else
is passed through unchanged. As istioctl, the namespace's labels are not consulted (the user asked for
injection); a pod template that says `sidecar.istio.io/inject: "false"`, a host-network pod or one already
injected is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from sailmesh.errors import ParseError
from sailmesh.webhook.inject import InjectionConfig, Obj, inject_pod, injection_required, not_acted_on

# kind -> the path of its pod template
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"), "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"), "Job": ("spec", "template"), "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _template(doc: Obj) -> tuple[Obj, Obj] | None:
    """(parent, template) for a workload kind, or None."""
    path = TEMPLATE_PATHS.get(str(doc.get("kind")))
    if path is None:
        return None
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, Mapping) else None
    tmpl = node.get(path[-1]) if isinstance(node, Mapping) else None
    return (node, tmpl) if isinstance(node, dict) and isinstance(tmpl, dict) else None


def inject_document(doc: Obj, cfg: InjectionConfig, namespace: str = "default",
                    warnings: list[str] | None = None) -> Obj:
    """One manifest object with its pod (template) injected; other kinds unchanged. Annotations the injector
    does not act on are added to `warnings` (prefixed with the object)."""
    ns = str((doc.get("metadata") or {}).get("namespace") or namespace)
    name = str((doc.get("metadata") or {}).get("name") or "")
    if doc.get("kind") == "Pod":
        needed, _ = injection_required(doc, ns)
        if needed and warnings is not None:
            warnings.extend(f"Pod {ns}/{name}: {w}" for w in not_acted_on(doc, cfg))
        return inject_pod(doc, cfg) if needed else doc
    found = _template(doc)
    if found is None:
        return doc
    parent, tmpl = found
    if not injection_required(tmpl, ns)[0]:
        return doc
    if warnings is not None:
        warnings.extend(f"{doc['kind']} {ns}/{name}: {w}" for w in not_acted_on(tmpl, cfg))
    key = TEMPLATE_PATHS[str(doc["kind"])][-1]
    parent[key] = inject_pod(tmpl, cfg, workload=name)
    return doc


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)


def inject_text(text: str, cfg: InjectionConfig, namespace: str = "default", source: str = "<input>",
                warnings: list[str] | None = None) -> str:
    """A YAML text (one or more documents) with every pod injected; documents separated by `---`."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ParseError(f"not YAML: {e}", file=source) from e
    out: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise ParseError("a document is not an object", file=source)
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            doc["items"] = [inject_document(i, cfg, namespace, warnings) if isinstance(i, dict) else i
                            for i in doc["items"]]
            out.append(_dump(doc))
        else:
            out.append(_dump(inject_document(doc, cfg, namespace, warnings)))
    return "---\n".join(out)
