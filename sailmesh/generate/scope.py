"""What one proxy can see: visible services, host resolution and matching, config ordering and lookup."""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from sailmesh.api.resource import Resource
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service

MESH_GATEWAY = "mesh"
# exact host -> [(order, VirtualService)], and [(order, wildcard host, VirtualService)]
HostTable = tuple[dict[str, list[tuple[int, Resource]]], list[tuple[int, str, Resource]]]


def fqdn(host: str, namespace: str, domain_suffix: str) -> str:
    """Istio's ResolveShortnameToFQDN: a name without dots is a service in `namespace`."""
    if not host or host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def host_matches(host: str, pattern: str) -> bool:
    """Whether a concrete or wildcard `host` falls under `pattern` (`*`, `*.suffix` or exact)."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        if host.startswith("*."):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: either side may be a wildcard."""
    return host_matches(a, b) or host_matches(b, a)


def exported_to(export_to: Iterable[str], owner_ns: str, viewer_ns: str) -> bool:
    """Istio exportTo: `*` (default) everyone, `.` the owner's namespace, names listed, `~` nobody."""
    values = list(export_to) or ["*"]
    for v in values:
        if v == "*" or v == viewer_ns or (v == "." and owner_ns == viewer_ns):
            return True
    return False


# Facts derived from one VirtualService object (exportTo, gateways, FQDN hosts, sourceLabels selectors), kept
# while the object lives: a snapshot after a one-resource change shares all other objects with the previous one.
VsFacts = tuple[list[str], set[str], list[str], tuple[tuple[tuple[str, str], ...], ...]]
_VS_FACTS: dict[int, tuple[weakref.ref[Resource], str, VsFacts]] = {}


def vs_facts(vs: Resource, domain_suffix: str) -> VsFacts:
    """(exportTo, bound gateways, FQDN hosts, sourceLabels selectors) of a VirtualService, once per object."""
    key = id(vs)
    hit = _VS_FACTS.get(key)
    if hit is not None and hit[0]() is vs and hit[1] == domain_suffix:
        return hit[2]
    selectors: dict[tuple[tuple[str, str], ...], None] = {}
    http = vs.spec.get("http")
    for route in http if isinstance(http, list) else ():
        matches = route.get("match") if isinstance(route, Mapping) else None
        for m in matches if isinstance(matches, list) else ():
            labels = m.get("sourceLabels") if isinstance(m, Mapping) else None
            if isinstance(labels, Mapping):
                selectors[tuple(sorted((str(k), str(v)) for k, v in labels.items()))] = None
    facts = (_resource_export(vs), bound_gateways(vs), vs_hosts(vs, domain_suffix), tuple(selectors))
    _VS_FACTS[key] = (weakref.ref(vs, lambda _r, k=key: _VS_FACTS.pop(k, None)), domain_suffix, facts)
    return facts


def _resource_export(r: Resource) -> list[str]:
    value = r.spec.get("exportTo") or []
    return [str(v) for v in value] if isinstance(value, list) else []


def _select_sidecar(snapshot: MeshSnapshot, proxy: ProxyView) -> Resource | None:
    sidecars = snapshot.of_kind("Sidecar")  # oldest first
    for sc in sidecars:
        ws = sc.spec.get("workloadSelector")
        labels = ws.get("labels") if isinstance(ws, Mapping) else None
        if sc.namespace == proxy.namespace and labels and all(
            proxy.labels.get(str(k)) == str(v) for k, v in labels.items()
        ):
            return sc
    for ns in (proxy.namespace, snapshot.mesh.root_namespace):
        for sc in sidecars:
            ws = sc.spec.get("workloadSelector")
            if sc.namespace == ns and not (isinstance(ws, Mapping) and ws.get("labels")):
                return sc
    return None


def egress_imports(egress: list[tuple[str, str]], namespace: str, hostname: str) -> bool:
    """Whether Sidecar egress hosts (`ns/host`, `*/`, `./`, `~/`) import a host of `namespace`."""
    for ns, host in egress:
        if ns == "~" or (ns != "*" and ns != namespace):
            continue
        if host == "*" or hosts_intersect(hostname, host):
            return True
    return False


def outbound_policy(snapshot: MeshSnapshot, proxy: ProxyView) -> str:
    """outboundTrafficPolicy mode: the proxy's Sidecar's, else the mesh's (Istio's default ALLOW_ANY)."""
    sc = index_of(snapshot).sidecar(proxy)
    policy = sc.spec.get("outboundTrafficPolicy") if sc is not None else None
    mode = policy.get("mode") if isinstance(policy, Mapping) else None
    mode = mode or getattr(snapshot.mesh, "outbound_traffic_policy", "ALLOW_ANY")
    return "REGISTRY_ONLY" if mode == "REGISTRY_ONLY" else "ALLOW_ANY"


class SnapshotIndex:
    """Lookups over one snapshot, built lazily and memoized (generators call them per service and port)."""

    def __init__(self, snapshot: MeshSnapshot, previous: SnapshotIndex | None = None) -> None:
        self.snapshot = snapshot
        # the index of the snapshot before (weakly: not kept alive), whose per-proxy outbound keys may carry over
        self._previous = weakref.ref(previous) if previous is not None else None
        self._inherit: bool | None = None
        self._rules: dict[str, list[tuple[str, Resource]]] | None = None
        self._dr: dict[tuple[str, str], Resource | None] = {}
        self._vs: dict[tuple[str, str], list[Resource]] = {}
        self._visible: dict[Hashable, list[Service]] = {}
        self._by_host: dict[Hashable, tuple[list[Resource], HostTable]] = {}
        self._by_ns: dict[str, list[Service]] | None = None
        self._bound_to: dict[str, list[tuple[Resource, list[str], bool]]] = {}
        self._mesh_ns: dict[str, list[tuple[int, Resource, list[str], bool]]] | None = None
        self._sidecar: dict[Hashable, Resource | None] = {}
        self._outbound: dict[Hashable, Hashable] = {}
        self._selectors: list[tuple[tuple[str, str], ...]] | None = None
        self._vs_parsed: list[tuple[Resource, list[str], set[str], list[str]]] | None = None
        self._hosts_of: dict[int, list[str]] | None = None

    def sidecar(self, proxy: ProxyView) -> Resource | None:
        """The Sidecar resource that configures a sidecar proxy (Istio's selection order).

        A Sidecar in the proxy's namespace whose workloadSelector matches its labels, else the
        namespace's Sidecar without a selector, else the root namespace's Sidecar without a selector.
        Gateways are not configured by Sidecars.
        """
        if proxy.type != "sidecar":
            return None
        key = ("sidecar", proxy.scope_key)
        if key not in self._sidecar:
            self._sidecar[key] = _select_sidecar(self.snapshot, proxy)
        return self._sidecar[key]

    def outbound_key(self, proxy: ProxyView) -> Hashable:
        """What a proxy's outbound config (clusters, endpoints, routes) depends on: equal keys, equal config.

        A sidecar's labels matter only through the Sidecar they select and the VirtualService
        `sourceLabels` they match, so sidecars of different deployments in one namespace share their
        outbound config. Gateways keep their labels (they select Gateway resources). A generator that
        reads more of the proxy for outbound config must add it here.
        """
        key = proxy.scope_key
        hit = self._outbound.get(key)
        if hit is None:
            hit = self._inherited_outbound(key)
        if hit is None:
            if proxy.type != "sidecar":
                hit = key
            else:
                sc = self.sidecar(proxy)
                # the selectors themselves (not their positions): keys stay comparable across snapshots
                matched = tuple(sel for sel in self._source_selectors()
                                if all(proxy.labels.get(k) == v for k, v in sel))
                hit = ("sidecar", proxy.namespace, None if sc is None else (sc.namespace, sc.name), matched)
            self._outbound[key] = hit
        return hit

    def _source_selectors(self) -> list[tuple[tuple[str, str], ...]]:
        """Every distinct `http[].match[].sourceLabels` of the snapshot's VirtualServices."""
        if self._selectors is None:
            suffix = self.snapshot.mesh.domain_suffix
            found: dict[tuple[tuple[str, str], ...], None] = {}
            for vs in self.snapshot.of_kind("VirtualService"):
                found.update(dict.fromkeys(vs_facts(vs, suffix)[3]))
            self._selectors = list(found)
        return self._selectors

    def _inherited_outbound(self, scope_key: Hashable) -> Hashable | None:
        """The previous snapshot's outbound key for a scope when what it depends on is unchanged."""
        prev = self._previous() if self._previous is not None else None
        if prev is None:
            return None
        if self._inherit is None:
            same = (prev.snapshot.of_kind("Sidecar") is self.snapshot.of_kind("Sidecar")
                    and prev.snapshot.mesh == self.snapshot.mesh
                    and prev._source_selectors() == self._source_selectors())
            self._inherit = same
        return prev._outbound.get(scope_key) if self._inherit else None

    def egress(self, proxy: ProxyView) -> list[tuple[str, str]] | None:
        """(namespace, host) pairs of the proxy's Sidecar egress listeners; None = everything is imported."""
        sc = self.sidecar(proxy)
        if sc is None or not sc.spec.get("egress"):
            return None
        out = []
        for listener in sc.spec.get("egress") or []:
            if not isinstance(listener, Mapping):
                continue
            for h in listener.get("hosts") or []:
                ns, _, host = str(h).partition("/")
                out.append((proxy.namespace if ns == "." else ns, host))
        return out

    def visible_services(self, proxy: ProxyView) -> list[Service]:
        key = self.outbound_key(proxy)
        hit = self._visible.get(key)
        if hit is None:
            egress = self.egress(proxy)
            candidates: Iterable[Service] = self.snapshot.services.values()
            if egress is not None and not any(ns == "*" for ns, _ in egress):
                # egress hosts name namespaces: only their services can be imported
                by_ns = self._services_by_namespace()
                candidates = [s for ns in dict.fromkeys(ns for ns, _ in egress) for s in by_ns.get(ns, ())]
            hit = sorted(
                (
                    s
                    for s in candidates
                    if exported_to(s.export_to, s.namespace, proxy.namespace)
                    and (egress is None or egress_imports(egress, s.namespace, s.hostname))
                ),
                key=lambda s: s.hostname,
            )
            self._visible[key] = hit
        return hit

    def _services_by_namespace(self) -> dict[str, list[Service]]:
        if self._by_ns is None:
            self._by_ns = {}
            for s in self.snapshot.services.values():
                self._by_ns.setdefault(s.namespace, []).append(s)
        return self._by_ns

    def _vs_facts(self) -> list[tuple[Resource, list[str], set[str], list[str]]]:
        """Every VirtualService oldest first with its exportTo, bound gateways and FQDN hosts (once per snapshot)."""
        if self._vs_parsed is None:
            suffix = self.snapshot.mesh.domain_suffix
            self._vs_parsed = [(vs, *vs_facts(vs, suffix)[:3])
                               for vs in self.snapshot.of_kind("VirtualService")]  # oldest first
        return self._vs_parsed

    def _vs_hosts(self) -> dict[int, list[str]]:
        if self._hosts_of is None:
            self._hosts_of = {id(vs): hosts for vs, _, _, hosts in self._vs_facts()}
        return self._hosts_of

    def virtual_services(self, proxy_ns: str, gateway: str) -> list[Resource]:
        key = (proxy_ns, gateway)
        hit = self._vs.get(key)
        if hit is None:
            bound = self._bound(gateway)
            if all(open_ for _, _, open_ in bound):
                hit = self._vs.setdefault(("*", gateway), [vs for vs, _, _ in bound])
            else:  # exportTo applies to sidecars and gateways alike
                hit = [vs for vs, export, open_ in bound if open_ or exported_to(export, vs.namespace, proxy_ns)]
            self._vs[key] = hit
        return hit

    def _bound(self, gateway: str) -> list[tuple[Resource, list[str], bool]]:
        """VirtualServices bound to `gateway`, oldest first, with their exportTo and whether it is `*`."""
        hit = self._bound_to.get(gateway)
        if hit is None:
            hit = [(vs, export, not export or "*" in export)
                   for vs, export, gateways, _ in self._vs_facts() if gateway in gateways]
            self._bound_to[gateway] = hit
        return hit

    def _mesh_by_namespace(self) -> dict[str, list[tuple[int, Resource, list[str], bool]]]:
        """Mesh VirtualServices by namespace, each with its position in creation order."""
        if self._mesh_ns is None:
            self._mesh_ns = {}
            for i, (vs, export, open_) in enumerate(self._bound(MESH_GATEWAY)):
                self._mesh_ns.setdefault(vs.namespace, []).append((i, vs, export, open_))
        return self._mesh_ns

    def _imported(self, proxy: ProxyView) -> tuple[list[Resource], HostTable]:
        """The mesh VirtualServices a proxy imports (oldest first) and them by host, once per outbound key."""
        key = self.outbound_key(proxy)
        hit = self._by_host.get(key)
        if hit is None:
            imported: list[Resource] = []
            exact: dict[str, list[tuple[int, Resource]]] = {}
            wild: list[tuple[int, str, Resource]] = []
            egress = self.egress(proxy)
            hosts_of = self._vs_hosts()
            candidates: Iterable[tuple[int, Resource, list[str], bool]]
            if egress is None or any(ns == "*" for ns, _ in egress):
                candidates = ((i, vs, export, open_) for i, (vs, export, open_) in enumerate(self._bound(MESH_GATEWAY)))
            else:
                # egress hosts name namespaces: a VirtualService elsewhere cannot be imported
                by_ns = self._mesh_by_namespace()
                candidates = sorted((c for ns in {ns for ns, _ in egress} for c in by_ns.get(ns, ())),
                                    key=lambda c: c[0])
            for i, vs, export, open_ in candidates:
                if not open_ and not exported_to(export, vs.namespace, proxy.namespace):
                    continue
                hosts = hosts_of[id(vs)]
                if egress is not None and not any(egress_imports(egress, vs.namespace, h) for h in hosts):
                    continue
                imported.append(vs)
                for h in dict.fromkeys(hosts):
                    if "*" in h:
                        wild.append((i, h, vs))
                    else:
                        exact.setdefault(h, []).append((i, vs))
            hit = self._by_host[key] = (imported, (exact, wild))
        return hit

    def mesh_virtual_services(self, proxy: ProxyView) -> list[Resource]:
        """Mesh VirtualServices the proxy imports (exportTo and its Sidecar's egress hosts), oldest first."""
        return self._imported(proxy)[0]

    def hosts_of(self, vs: Resource) -> list[str]:
        """A VirtualService's hosts as FQDNs (computed once per snapshot)."""
        hosts = self._vs_hosts().get(id(vs))
        return hosts if hosts is not None else vs_hosts(vs, self.snapshot.mesh.domain_suffix)

    def mesh_virtual_services_for(self, proxy: ProxyView, hostname: str) -> list[Resource]:
        """Mesh VirtualServices the proxy imports whose hosts match `hostname`, oldest first."""
        exact, wild = self._imported(proxy)[1]
        if not wild:
            return [vs for _, vs in exact.get(hostname, ())]
        found = exact.get(hostname, []) + [(i, vs) for i, h, vs in wild if host_matches(hostname, h)]
        seen: set[int] = set()
        out = []
        for i, vs in sorted(found, key=lambda t: t[0]):
            if i not in seen:
                seen.add(i)
                out.append(vs)
        return out

    def _same_rules_as_previous(self) -> SnapshotIndex | None:
        """The previous snapshot's index if DestinationRule lookups give the same answers here."""
        prev = self._previous() if self._previous is not None else None
        if prev is not None and prev.snapshot.of_kind("DestinationRule") is self.snapshot.of_kind("DestinationRule") \
                and prev.snapshot.services is self.snapshot.services and prev.snapshot.mesh == self.snapshot.mesh:
            return prev
        return None

    def _rules_by_ns(self) -> dict[str, list[tuple[str, Resource]]]:
        if self._rules is None and (prev := self._same_rules_as_previous()) is not None:
            self._rules, self._dr = prev._rules_by_ns(), prev._dr  # shared: both snapshots give the same answers
        if self._rules is None:
            suffix = self.snapshot.mesh.domain_suffix
            self._rules = {}
            for dr in self.snapshot.of_kind("DestinationRule"):  # oldest first
                host = fqdn(str(dr.spec.get("host") or ""), dr.namespace, suffix)
                self._rules.setdefault(dr.namespace, []).append((host, dr))
        return self._rules

    def destination_rule(self, proxy_ns: str, service: Service) -> Resource | None:
        rules = self._rules_by_ns()
        key = (proxy_ns, service.hostname)
        if key in self._dr:
            return self._dr[key]
        found: Resource | None = None
        for ns in (proxy_ns, service.namespace, self.snapshot.mesh.root_namespace):
            best: tuple[int, Resource] | None = None
            for host, dr in rules.get(ns, ()):
                if ns != proxy_ns and not exported_to(_resource_export(dr), dr.namespace, proxy_ns):
                    continue
                if not host_matches(service.hostname, host):
                    continue
                specificity = 1 << 30 if host == service.hostname else len(host)
                if best is None or specificity > best[0]:
                    best = (specificity, dr)
            if best:
                found = best[1]
                break
        self._dr[key] = found
        return found


# The newest index built, weakly: the next snapshot's index may take per-proxy facts over from it.
_LATEST: list[weakref.ref[SnapshotIndex]] = []


def index_of(snapshot: MeshSnapshot) -> SnapshotIndex:
    """The memoized index of a snapshot (held by the snapshot itself, so it goes when the snapshot goes)."""
    idx = snapshot.derived.get("index")
    if isinstance(idx, SnapshotIndex):
        return idx
    previous = _LATEST[0]() if _LATEST else None
    idx = SnapshotIndex(snapshot, previous if previous is not None and previous.snapshot is not snapshot else None)
    snapshot.derived["index"] = idx
    _LATEST[:] = [weakref.ref(idx)]
    return idx


def visible_services(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Service]:
    """Services exported to the proxy's namespace, sorted by hostname."""
    return index_of(snapshot).visible_services(proxy)


def virtual_services(snapshot: MeshSnapshot, proxy_ns: str, gateway: str) -> list[Resource]:
    """VirtualServices bound to `gateway` (`mesh` or `ns/name`) visible from `proxy_ns`, oldest first."""
    return index_of(snapshot).virtual_services(proxy_ns, gateway)


def bound_gateways(vs: Resource) -> set[str]:
    """The gateways a VirtualService applies to as `mesh` or `ns/name` (none listed = `mesh`)."""
    names = vs.spec.get("gateways") or [MESH_GATEWAY]
    return {gateway_ref(str(g), vs.namespace) for g in names}


def gateway_ref(name: str, namespace: str) -> str:
    """`name` -> `namespace/name`; `ns/name` and `mesh` stay."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    return f"{namespace}/{name}"


def vs_hosts(vs: Resource, domain_suffix: str) -> list[str]:
    """A VirtualService's hosts as FQDNs (short names resolved in its namespace)."""
    return [fqdn(str(h), vs.namespace, domain_suffix) for h in vs.spec.get("hosts") or []]


def destination_rule(snapshot: MeshSnapshot, proxy_ns: str, service: Service) -> Resource | None:
    """The DestinationRule for a service as Istio picks it.

    Lookup order: the proxy's namespace, the service's namespace, the root namespace; inside each,
    an exact host beats the most specific wildcard; ties go to the oldest rule.
    """
    return index_of(snapshot).destination_rule(proxy_ns, service)


def subset_of(dr: Resource | None, name: str) -> Mapping[str, Any] | None:
    """A named subset of a DestinationRule."""
    if dr is None or not name:
        return None
    for s in dr.spec.get("subsets") or []:
        if isinstance(s, Mapping) and s.get("name") == name:
            return s
    return None


def inbound_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> list[tuple[int, int, str]]:
    """(containerPort, app port, protocol) for each port the sidecar owns on the proxy's address.

    Ports come from the proxy's APP_PORTS and from the target ports of the services in its namespace
    that select it; the protocol is the selecting service port's (TCP when no service names it).
    """
    protocols: dict[int, str] = {}
    # A named targetPort resolves through the named container ports of the proxy's workload; a workload
    # without that name does not serve the service port (Kubernetes gives it no endpoint), so no listener.
    me = next((w for w in snapshot.workloads if w.address == proxy.ip and w.namespace == proxy.namespace), None)
    named = me.ports if me is not None else {}
    for svc in sorted(snapshot.services.values(), key=lambda s: s.hostname):
        if svc.namespace != proxy.namespace or not svc.selector:
            continue
        if not all(proxy.labels.get(k) == v for k, v in svc.selector.items()):
            continue
        for p in svc.ports:
            target = named.get(p.target_port_name, 0) if p.target_port_name else (p.target_port or p.port)
            if target:
                protocols.setdefault(target, p.protocol)
    ports = set(proxy.app_ports) | set(protocols)
    return [(p, proxy.app_ports.get(p, p), protocols.get(p, "TCP")) for p in sorted(ports)]
