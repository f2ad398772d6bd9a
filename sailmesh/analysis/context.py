"""What analyzers see: every resource by kind and mesh config (host/selector rules: sailmesh.api.hosts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sailmesh.analysis.shapes import as_list, as_map
from sailmesh.api.hosts import DEFAULT_DOMAIN_SUFFIX, analyzer_fqdn, host_subset_of, hosts_match, selector_matches
from sailmesh.api.models import Model
from sailmesh.api.models.networking import DestinationRule, ServiceEntry, VirtualService
from sailmesh.api.resource import Resource
from sailmesh.errors import ModelError

M = TypeVar("M", bound=Model)

DOMAIN_SUFFIX = DEFAULT_DOMAIN_SUFFIX
DEFAULT_ROOT_NAMESPACE = "istio-system"


def _typed(r: Resource, cls: type[M]) -> M | None:
    """The resource's typed spec as `cls` (built once per resource); None for another kind or a spec that does not fit.

    Analyzers run on config as written, valid or not (the schema analyzers report what does not fit); a
    resource that cannot be read typed is skipped, as Istio's analyzers never see objects that fail to convert.
    """
    try:
        m = r.model
    except ModelError:
        return None
    return m if isinstance(m, cls) else None


def export_to(res: Resource) -> list[str]:
    """The exportTo list of a VirtualService, DestinationRule or ServiceEntry; `*` when unset (or unreadable)."""
    m = _typed(res, Model)
    val = m.export_to if isinstance(m, VirtualService | DestinationRule | ServiceEntry) else None
    return list(val) if val else ["*"]


def export_scope(r: Resource) -> set[str] | None:
    """The namespaces a resource is exported to (`.` resolved), None when to every namespace (`*` or unset)."""
    ex = export_to(r)
    if "*" in ex:
        return None
    return {r.namespace if e == "." else e for e in ex}


@dataclass
class ServiceInfo:
    """A service host known to the mesh (Kubernetes Service or ServiceEntry host)."""

    host: str
    namespace: str
    port_numbers: tuple[Any, ...]  # Service spec.ports[].port / ServiceEntry ports[].number as written (None: unset)
    resource: Resource


@dataclass
class Context:
    """Indexed view of the input resources plus mesh config."""

    resources: list[Resource]
    mesh_config: Mapping[str, Any] = field(default_factory=dict)
    mesh_networks: Mapping[str, Any] = field(default_factory=dict)
    by_kind: dict[str, list[Resource]] = field(init=False)
    _workloads: list[Resource] | None = field(init=False, default=None)
    _workloads_by_ns: dict[str, list[Resource]] | None = field(init=False, default=None)
    _services: list[ServiceInfo] | None = field(init=False, default=None)
    _by_host: dict[str, list[ServiceInfo]] = field(init=False, default_factory=dict)
    _wildcard_services: list[ServiceInfo] = field(init=False, default_factory=list)
    _unfit: dict[int, Resource] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Analyzers read spec/mesh config as mappings; other shapes are schema errors reported elsewhere.
        self.resources = [r if isinstance(r.spec, Mapping) else replace(r, spec={}) for r in self.resources]
        if not isinstance(self.mesh_config, Mapping):
            self.mesh_config = {}
        if not isinstance(self.mesh_networks, Mapping):
            self.mesh_networks = {}
        self.by_kind = defaultdict(list)
        for r in self.resources:
            self.by_kind[r.kind].append(r)

    @property
    def root_namespace(self) -> str:
        return str(self.mesh_config.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)

    def of(self, *kinds: str) -> list[Resource]:
        """Resources of the given kinds, in input order."""
        out: list[Resource] = []
        for k in kinds:
            out.extend(self.by_kind.get(k, []))
        return out

    def model(self, r: Resource, cls: type[M]) -> M | None:
        """The resource's typed spec, or None when its spec does not fit the model (see `_typed`).

        A spec that does not fit is tried once per context (a failed build is not cached on the resource).
        """
        if self._unfit.get(id(r)) is r:
            return None
        try:
            m = r.model
        except ModelError:
            self._unfit[id(r)] = r
            return None
        return m if isinstance(m, cls) else None

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        for r in self.by_kind.get(kind, []):
            if r.name == name and r.namespace == namespace:
                return r
        return None

    def namespaces(self) -> set[str]:
        """Every namespace mentioned: Namespace objects plus namespaces of namespaced resources."""
        out = {r.name for r in self.of("Namespace")}
        out.update(r.namespace for r in self.resources if r.namespace)
        return out

    def pods(self) -> list[Resource]:
        return self.of("Pod")

    def workloads(self) -> list[Resource]:
        """Pods plus the pod templates of workload controllers (offline, a Deployment stands for its pods)."""
        if self._workloads is None:
            self._workloads = [*self.pods(), *(_template_pod(r) for r in self.of(*WORKLOAD_CONTROLLERS))]
        return self._workloads

    def pods_matching(self, namespace: str | None, selector: Mapping[str, str] | None) -> list[Resource]:
        """Workloads in namespace (any when None) whose labels match the selector."""
        if namespace is None:
            return [p for p in self.workloads() if selector_matches(selector, p.labels)]
        if self._workloads_by_ns is None:
            self._workloads_by_ns = {}
            for p in self.workloads():
                self._workloads_by_ns.setdefault(p.namespace, []).append(p)
        return [p for p in self._workloads_by_ns.get(namespace, []) if selector_matches(selector, p.labels)]

    def services(self) -> list[ServiceInfo]:
        """Kubernetes Services (as FQDN) and every ServiceEntry host (computed once)."""
        if self._services is None:
            self._services = list(self._iter_services())
            for s in self._services:
                if s.host.startswith("*"):
                    self._wildcard_services.append(s)
                else:
                    self._by_host.setdefault(s.host, []).append(s)
        return self._services

    def services_overlapping(self, host: str) -> list[ServiceInfo]:
        """Services whose host overlaps a resolved host (indexed: exact hosts plus wildcard entries)."""
        services = self.services()
        if host.startswith("*"):
            return [s for s in services if hosts_match(host, s.host)]
        return [*self._by_host.get(host, []), *(s for s in self._wildcard_services if host_subset_of(host, s.host))]

    def _iter_services(self) -> Iterator[ServiceInfo]:
        for s in self.of("Service"):  # a core kind: its spec stays raw
            numbers = tuple(p.get("port") for p in as_list(s.spec.get("ports")) if isinstance(p, Mapping))
            yield ServiceInfo(f"{s.name}.{s.namespace}.svc.{DOMAIN_SUFFIX}", s.namespace, numbers, s)
        for se in self.of("ServiceEntry"):
            entry = self.model(se, ServiceEntry)
            if entry is None:
                continue
            numbers = tuple(p.number for p in entry.ports or ())
            for h in entry.hosts or ():
                yield ServiceInfo(analyzer_fqdn(h, se.namespace), se.namespace, numbers, se)


WORKLOAD_CONTROLLERS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def _template_pod(r: Resource) -> Resource:
    """A Pod-like view of a controller's pod template: template labels/annotations, controller name."""
    tmpl = as_map(as_map(r.raw.get("spec")).get("template"))
    meta = as_map(tmpl.get("metadata"))
    labels = as_map(meta.get("labels"))
    annotations = as_map(meta.get("annotations"))
    return replace(
        r,
        kind="Pod",
        labels={str(k): str(v) for k, v in labels.items()},
        annotations={str(k): str(v) for k, v in annotations.items()},
        raw={"metadata": dict(meta), "spec": as_map(tmpl.get("spec"))},
    )


def group_by(items: Iterable[Any], key: Any) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for i in items:
        out[key(i)].append(i)
    return out
