"""Workloads from the API server: Pods (joined with their Node's locality) and EndpointSlice endpoints without a Pod.

A running Pod with an IP is a workload as Istio's pod controller sees it: its labels (service selectors match
them), service account, named container ports, readiness (the `Ready` condition; a terminating pod is not
ready) and locality: the pod's `istio-locality` label, else its node's `topology.kubernetes.io/region`,
`topology.kubernetes.io/zone` and `topology.istio.io/subzone` labels. Its network is the pod's
`topology.istio.io/network` label, else its namespace's.

An EndpointSlice endpoint that names no known Pod (a Service without selector, with slices written by hand or
by another controller) becomes a workload of that Service alone (`Workload.service`), with the slice's port
numbers by port name and the endpoint's `ready` condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sailmesh.api.change import Change
from sailmesh.platform.kube.informer import KubeResource, Obj
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import workload_key
from sailmesh.store.base import Broadcaster, Subscription

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LOCALITY_LABEL = "istio-locality"
NETWORK_LABEL = "topology.istio.io/network"
REGION, ZONE, SUBZONE = "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _id(obj: Mapping[str, Any]) -> tuple[str, str]:
    m = _meta(obj)
    return str(m.get("namespace") or ""), str(m.get("name") or "")


def node_locality(node: Mapping[str, Any]) -> str:
    """region/zone/subzone from a Node's topology labels ("" when it has none)."""
    labels = _labels(node)
    parts = [labels.get(REGION, ""), labels.get(ZONE, ""), labels.get(SUBZONE, "")]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The Ready condition is True and the pod is not terminating."""
    if _meta(pod).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return str(c.get("status")) == "True"
    return False


def _named_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in (c or {}).get("ports") or ():
            if isinstance(p, Mapping) and p.get("name") and isinstance(p.get("containerPort"), int):
                out[str(p["name"])] = int(p["containerPort"])
    return out


class KubeRegistry:
    """The Kubernetes member of the aggregate registry; written only by its informers (the handler methods)."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], Obj] = {}
        self._slices: dict[tuple[str, str], Obj] = {}
        self._nodes: dict[str, Obj] = {}
        self._namespaces: dict[str, Obj] = {}
        self._revision = 0
        self._events = Broadcaster()
        self._workloads: tuple[Workload, ...] | None = None

    # -- WatchedSource ----------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._revision

    def workloads(self) -> tuple[Workload, ...]:
        """Every workload, sorted by (namespace, name); the same tuple until something changes."""
        if self._workloads is None:
            found = [*self._pod_workloads(), *self._slice_workloads()]
            self._workloads = tuple(sorted(found, key=lambda w: (w.namespace, w.name, w.origin)))
        return self._workloads

    def watch(self) -> Subscription:
        return self._events.subscribe()

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """A namespace's labels ({} when unknown)."""
        ns = self._namespaces.get(namespace)
        return MappingProxyType(_labels(ns) if ns else {})

    def namespaces(self) -> tuple[Obj, ...]:
        """The API server's Namespace objects as listed/watched (their own labels: `istio-injection`, ...)."""
        return tuple(self._namespaces[k] for k in sorted(self._namespaces))

    # -- informer handler -------------------------------------------------------------------------
    def _table(self, resource: KubeResource) -> dict[Any, Obj]:
        tables: dict[str, dict[Any, Obj]] = {"Pod": self._pods, "EndpointSlice": self._slices,
                                             "Node": self._nodes, "Namespace": self._namespaces}
        return tables[resource.kind]

    @staticmethod
    def _key(resource: KubeResource, obj: Obj) -> Any:
        return _id(obj) if resource.namespaced else _id(obj)[1]

    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        table = self._table(resource)
        fresh = {self._key(resource, o): o for o in objs}
        if fresh != table:
            table.clear()
            table.update(fresh)
            self._changed()

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        table = self._table(resource)
        key = self._key(resource, obj)
        if table.get(key) != obj:
            table[key] = obj
            self._changed()

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        if self._table(resource).pop(self._key(resource, obj), None) is not None:
            self._changed()

    def _changed(self) -> None:
        before = {(w.namespace, w.name, w.origin): w for w in self._workloads or ()}
        self._workloads = None
        after = {(w.namespace, w.name, w.origin): w for w in self.workloads()}
        keys = {workload_key(k[1], k[0]) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        if keys:
            self._revision += 1
            self._events.publish(Change(frozenset(keys)))

    # -- workloads --------------------------------------------------------------------------------
    def _locality(self, pod: Mapping[str, Any]) -> str:
        label = _labels(pod).get(LOCALITY_LABEL, "")
        if label:
            return label.replace(".", "/")  # Istio's label form uses dots (labels cannot hold slashes)
        node = self._nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        return node_locality(node) if node else ""

    def _network(self, namespace: str, labels: Mapping[str, str]) -> str:
        return labels.get(NETWORK_LABEL) or self.namespace_labels(namespace).get(NETWORK_LABEL, "")

    def _pod_workloads(self) -> list[Workload]:
        out = []
        for (ns, name), pod in self._pods.items():
            status = pod.get("status") or {}
            ip = str(status.get("podIP") or "")
            if not ip or status.get("phase") in ("Succeeded", "Failed"):
                continue
            labels = _labels(pod)
            spec = pod.get("spec") or {}
            subdomain = str(spec.get("subdomain") or "")
            out.append(Workload(
                name=name, namespace=ns, address=ip, labels=MappingProxyType(labels),
                service_account=str(spec.get("serviceAccountName") or "default"),
                locality=self._locality(pod), network=self._network(ns, labels), healthy=pod_ready(pod),
                origin=f"Pod {ns}/{name}", ports=MappingProxyType(_named_ports(pod)),
                hostname=str(spec.get("hostname") or name) if subdomain else "", subdomain=subdomain,
            ))
        return out

    def _slice_workloads(self) -> list[Workload]:
        out = []
        for (ns, name), sl in self._slices.items():
            service = _labels(sl).get(SERVICE_NAME_LABEL, "")
            if not service or sl.get("addressType") not in ("IPv4", "IPv6"):
                continue
            ports = {str(p.get("name") or ""): int(p["port"]) for p in sl.get("ports") or ()
                     if isinstance(p, Mapping) and isinstance(p.get("port"), int)}
            for ep in sl.get("endpoints") or ():
                ref = ep.get("targetRef") or {}
                if ref.get("kind") == "Pod" and (str(ref.get("namespace") or ns), str(ref.get("name"))) in self._pods:
                    continue  # the Pod is the workload (its labels match the Service's selector)
                ready = (ep.get("conditions") or {}).get("ready")
                node = self._nodes.get(str(ep.get("nodeName") or ""))
                for addr in ep.get("addresses") or ():
                    out.append(Workload(
                        name=f"{name}-{addr}", namespace=ns, address=str(addr),
                        healthy=ready is not False, origin=f"EndpointSlice {ns}/{name}",
                        ports=MappingProxyType(ports), service=f"{ns}/{service}",
                        locality=node_locality(node) if node else "",
                    ))
        return out
