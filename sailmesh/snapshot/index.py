"""SnapshotIndex: what each proxy can see in one snapshot (Istio's PushContext and SidecarScope job).

Built by `snapshot.build` with the snapshot and owned by it (`MeshSnapshot.index`). Lookups are computed on first
use and memoized for the snapshot's lifetime; facts that cannot differ from the previous snapshot's (per-object
VirtualService facts, outbound keys, DestinationRule answers) are taken over from the previous index when it is
built, so the index keeps no reference to older snapshots.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sailmesh.api import locality
from sailmesh.api.hosts import exported_to, host_subset_of, hosts_match, resolve_short_name, selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule, Sidecar, VirtualService
from sailmesh.api.resource import Resource
from sailmesh.registry.model import Service, Workload
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot import drmerge

if TYPE_CHECKING:
    from sailmesh.snapshot.model import ProxyView

MESH_GATEWAY = "mesh"
_EVERYWHERE = ("every proxy",)  # the _imported key shared by proxies that import every mesh VirtualService
# destination_rule's view of a host from a proxy namespace that holds no rule for it and that no rule for it exports
# to by name: every such namespace gets the same answer ("*" is no namespace name; exportTo "*" covers it as any)
ANY_NAMESPACE = "*"
# one answer of destination_rule: the rules with a workloadSelector (in order) and the catch-all rule
DrAnswer = tuple[list[tuple[Mapping[str, str], Resource]], Resource | None]
# exact host -> [(order, VirtualService)], and [(order, wildcard host, VirtualService)]
HostTable = tuple[dict[str, list[tuple[int, Resource]]], list[tuple[int, str, Resource]]]
# (exportTo, bound gateways, FQDN hosts, sourceLabels selectors) of one VirtualService object
VsFacts = tuple[list[str], set[str], list[str], tuple[tuple[tuple[str, str], ...], ...]]
Config = Mapping[str, tuple[Resource, ...]]


def vs_facts(vs: Resource, domain_suffix: str) -> VsFacts:
    """(exportTo, bound gateways, FQDN hosts, sourceLabels selectors) of a VirtualService."""
    selectors: dict[tuple[tuple[str, str], ...], None] = {}
    spec = model_of(vs, VirtualService)
    found = [m.source_labels for r in spec.http or () for m in r.match or ()]
    found += [m.source_labels for r in spec.tcp or () for m in r.match or ()]  # every route kind reads the client
    found += [m.source_labels for r in spec.tls or () for m in r.match or ()]
    for labels in found:
        if labels is not None:
            selectors[tuple(sorted(labels.items()))] = None
    export = list(model_of(vs, VirtualService).export_to or ())
    return (export, bound_gateways(vs), vs_hosts(vs, domain_suffix), tuple(selectors))


def failover_priority_labels(rules: tuple[Resource, ...]) -> tuple[str, ...]:
    """The label names any DestinationRule's localityLbSetting.failoverPriority lists (its endpoints' priorities
    then depend on those labels of the proxy)."""
    found: dict[str, None] = {}
    for dr in rules:
        spec = model_of(dr, DestinationRule)
        policies: list[Any] = [spec.traffic_policy, *(s.traffic_policy for s in spec.subsets or ())]
        policies += [p for tp in policies if tp is not None for p in tp.port_level_settings or ()]
        for tp in policies:
            lb = tp.load_balancer if tp is not None else None
            raw = lb.locality_lb_setting if lb is not None else None
            for item in (raw or {}).get("failoverPriority") or ():
                found[str(item).partition("=")[0]] = None
    return tuple(found)


def http_route_inputs(vs: Resource, domain_suffix: str) -> tuple[bool, tuple[str, ...]]:
    """What a VirtualService's HTTP routes read besides the VirtualService and the services: whether a match
    reads the client (sourceLabels, sourceNamespace), and the FQDN hosts of its destinations and mirrors (whose
    DestinationRules give the routes' hash policies)."""
    reads_client = False
    hosts: dict[str, None] = {}
    for route in model_of(vs, VirtualService).http or ():
        for m in route.match or ():
            reads_client = reads_client or m.source_labels is not None or bool(m.source_namespace)
        dests = [d.destination for d in route.route or ()]
        dests += [route.mirror, *(m.destination for m in route.mirrors or ())]
        for d in dests:
            if d is not None and d.host:
                hosts[resolve_short_name(d.host, vs.namespace, domain_suffix)] = None
    return reads_client, tuple(hosts)


def _select_sidecar(sidecars: tuple[Resource, ...], root_namespace: str, proxy: ProxyView) -> Resource | None:
    """Istio's Sidecar selection for a sidecar proxy (see SnapshotIndex.sidecar); `sidecars` oldest first."""

    def labels(sc: Resource) -> Mapping[str, str] | None:
        ws = model_of(sc, Sidecar).workload_selector
        return ws.labels if ws is not None else None

    for sc in sidecars:
        sel = labels(sc)
        if sc.namespace == proxy.namespace and sel and selector_matches(sel, proxy.labels):
            return sc
    for ns in (proxy.namespace, root_namespace):
        for sc in sidecars:
            if sc.namespace == ns and not labels(sc):
                return sc
    return None


def egress_imports(egress: list[tuple[str, str]], namespace: str, hostname: str) -> bool:
    """Whether Sidecar egress hosts (`ns/host`, `*/`, `./`, `~/`) import a host of `namespace`."""
    for ns, host in egress:
        if ns == "~" or (ns != "*" and ns != namespace):
            continue
        if host == "*" or hosts_match(hostname, host):
            return True
    return False


class SnapshotIndex:
    """Lookups over one snapshot's config and services, computed on first use and memoized with the snapshot.

    `previous` is the previous snapshot's index: what it computed that cannot differ here is taken over now
    (shared objects, treated as immutable by both), and no reference to it is kept.
    """

    def __init__(self, config: Config, services: Mapping[str, Service], mesh: MeshDefaults,
                 previous: SnapshotIndex | None = None, workloads: tuple[Workload, ...] = ()) -> None:
        self.config = config
        self.services = services
        self.mesh = mesh
        self.workloads = workloads
        self._workload_at: dict[tuple[str, str], Workload] | None = None
        if previous is not None and previous.workloads is workloads:
            self._workload_at = previous._workload_at
        suffix = mesh.domain_suffix
        vss = config.get("VirtualService", ())
        self._facts: dict[int, tuple[Resource, VsFacts]]
        self._inputs: dict[int, tuple[Resource, tuple[bool, tuple[str, ...]]]]
        self._selectors: list[tuple[tuple[str, str], ...]]
        self._vs_parsed: list[tuple[Resource, list[str], set[str], list[str]]]
        self._hosts_of: dict[int, list[str]]
        same_suffix = previous is not None and previous.mesh.domain_suffix == suffix
        if previous is not None and same_suffix and previous.of_kind("VirtualService") is vss:
            # no VirtualService changed (an endpoint or another kind's change): every VS fact carries over as is
            self._facts, self._inputs = previous._facts, previous._inputs
            self._selectors, self._vs_parsed, self._hosts_of = \
                previous._selectors, previous._vs_parsed, previous._hosts_of
        else:
            self._index_virtual_services(vss, previous if same_suffix else None)
        # outbound keys depend on the Sidecars, the mesh, the sourceLabels selectors and the failoverPriority labels
        self._outbound: dict[Hashable, Hashable] = {}
        self._sidecar: dict[Hashable, Resource | None] = {}
        self._visible: dict[Hashable, list[Service]] = {}
        self._by_ns: dict[str, list[Service]] | None = None
        self._sorted_ns: dict[str, list[Service]] | None = None
        self._priority_labels: tuple[str, ...] | None = None
        self._dr_sel: dict[str, tuple[tuple[tuple[str, str], ...], ...]] | None = None
        if previous is not None and previous.of_kind("DestinationRule") is self.of_kind("DestinationRule"):
            self._priority_labels, self._dr_sel = previous._priority_labels, previous._dr_sel
        if previous is not None and previous.of_kind("Sidecar") is self.of_kind("Sidecar") \
                and previous.mesh == mesh and previous._selectors == self._selectors \
                and previous.priority_labels() == self.priority_labels() \
                and previous.dr_selectors() == self.dr_selectors():
            self._outbound, self._sidecar = previous._outbound, previous._sidecar
            # visible services depend on the outbound key (Sidecar egress, namespace) and the services only
            if previous.services is services:
                self._visible = previous._visible
        if previous is not None and previous.services is services:  # services by namespace
            self._by_ns, self._sorted_ns = previous._by_ns, previous._sorted_ns
        # DestinationRule answers depend on the rules, the services and the mesh only
        self._rules: dict[str, list[tuple[str, Resource]]] | None = None
        # host -> answer for ANY_NAMESPACE; proxy namespace -> host -> answer for the hosts it sees apart (_dr_views)
        self._dr_any: dict[str, DrAnswer] = {}
        self._dr: dict[str, dict[str, DrAnswer]] = {}
        self._dr_own: dict[str, tuple[frozenset[str], tuple[str, ...]]] | None = None
        self._merged: dict[tuple[int, ...], list[Resource]] = {}  # consolidated rules per list of rules
        if previous is not None and previous.of_kind("DestinationRule") is self.of_kind("DestinationRule") \
                and previous.services is services and previous.mesh == mesh:
            self._rules, self._dr_any, self._dr, self._merged = \
                previous._rules_by_ns(), previous._dr_any, previous._dr, previous._merged
            self._dr_own = previous._dr_views()
        self._vs: dict[tuple[str, str], list[Resource]] = {}
        self._by_host: dict[Hashable, tuple[list[Resource], HostTable]] = {}
        self._non_service: dict[int, tuple[list[Resource], list[tuple[Resource, list[str]]]]] = {}
        self._all_open: bool | None = None
        self._bound_to: dict[str, list[tuple[Resource, list[str], bool]]] = {}
        self._mesh_ns: dict[str, list[tuple[int, Resource, list[str], bool]]] | None = None

    def of_kind(self, kind: str) -> tuple[Resource, ...]:
        return self.config.get(kind, ())

    def priority_labels(self) -> tuple[str, ...]:
        """failover_priority_labels of this snapshot's DestinationRules (computed once, taken over while they stay)."""
        if self._priority_labels is None:
            self._priority_labels = failover_priority_labels(self.of_kind("DestinationRule"))
        return self._priority_labels

    def _index_virtual_services(self, vss: tuple[Resource, ...], previous: SnapshotIndex | None) -> None:
        """Per-object VirtualService facts, taken over for the objects `previous` had too (route inputs are
        computed on first use: only the current objects' are taken over)."""
        suffix = self.mesh.domain_suffix
        old = previous._facts if previous is not None else {}
        old_inputs = previous._inputs if previous is not None else {}
        self._facts = {}
        self._inputs = {
            id(vs): kept for vs in vss if (kept := old_inputs.get(id(vs))) is not None and kept[0] is vs}
        for vs in vss:
            hit = old.get(id(vs))
            self._facts[id(vs)] = hit if hit is not None and hit[0] is vs else (vs, vs_facts(vs, suffix))
        found: dict[tuple[tuple[str, str], ...], None] = {}
        for vs in vss:
            found.update(dict.fromkeys(self._facts[id(vs)][1][3]))
        self._selectors = list(found)
        self._vs_parsed = [(vs, *self._facts[id(vs)][1][:3]) for vs in vss]  # oldest first
        self._hosts_of = {id(vs): hosts for vs, _, _, hosts in self._vs_parsed}

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
            self._sidecar[key] = _select_sidecar(self.of_kind("Sidecar"), self.mesh.root_namespace, proxy)
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
            if proxy.type != "sidecar":
                hit = key
            else:
                sc = self.sidecar(proxy)
                # the selectors themselves (not their positions): keys stay comparable across snapshots
                matched = tuple(sel for sel in self._selectors
                                if all(proxy.labels.get(k) == v for k, v in sel))
                # the proxy's tlsMode label: whether its clusters may use mesh mTLS (generate/tls.py); its locality
                # and the labels failoverPriority (or a service's traffic distribution: network, node) names: its
                # endpoints' priorities (generate/locality.py); the
                # DestinationRule workloadSelectors of its namespace it matches (destination_rule); its declared
                # interception mode (a captured sidecar's PassthroughCluster is ORIGINAL_DST)
                rules = tuple(sel for sel in self.dr_selectors().get(proxy.namespace, ())
                              if all(proxy.labels.get(k) == v for k, v in sel))
                hit = ("sidecar", proxy.namespace, None if sc is None else (sc.namespace, sc.name), matched,
                       proxy.labels.get("security.istio.io/tlsMode", ""), locality.from_labels(proxy.labels),
                       tuple(proxy.labels.get(k) for k in self.priority_labels()),
                       proxy.labels.get(locality.NETWORK_LABEL), proxy.labels.get(locality.HOSTNAME_LABEL), rules,
                       proxy.scope_key[3:])
            self._outbound[key] = hit
        return hit

    def egress(self, proxy: ProxyView) -> list[tuple[str, str]] | None:
        """(namespace, host) pairs of the proxy's Sidecar egress listeners; None = everything is imported."""
        sc = self.sidecar(proxy)
        egress = model_of(sc, Sidecar).egress if sc is not None else None
        if not egress:
            return None
        out = []
        for listener in egress:
            for h in listener.hosts or ():
                ns, _, host = h.partition("/")
                out.append((proxy.namespace if ns == "." else ns, host))
        return out

    def visible_services(self, proxy: ProxyView) -> list[Service]:
        key = self.outbound_key(proxy)
        hit = self._visible.get(key)
        if hit is None:
            egress = self.egress(proxy)
            candidates: Iterable[Service] = self.services.values()
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

    def workload_at(self, address: str, namespace: str) -> Workload | None:
        """The workload with this address in this namespace (a sidecar's own), if the registry knows it."""
        if self._workload_at is None:
            at: dict[tuple[str, str], Workload] = {}
            for w in self.workloads:
                at.setdefault((w.address, w.namespace), w)
            self._workload_at = at
        return self._workload_at.get((address, namespace))

    def services_in(self, namespace: str) -> list[Service]:
        """The services of a namespace, sorted by hostname."""
        if self._sorted_ns is None:
            self._sorted_ns = {ns: sorted(svcs, key=lambda s: s.hostname)
                               for ns, svcs in self._services_by_namespace().items()}
        return self._sorted_ns.get(namespace, [])

    def _services_by_namespace(self) -> dict[str, list[Service]]:
        if self._by_ns is None:
            self._by_ns = {}
            for s in self.services.values():
                self._by_ns.setdefault(s.namespace, []).append(s)
        return self._by_ns

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
                   for vs, export, gateways, _ in self._vs_parsed if gateway in gateways]
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
        egress = self.egress(proxy)
        # Without egress limits and with every mesh VirtualService exported everywhere, every proxy imports the
        # same ones: one table for all outbound keys (without Sidecar scoping, one instead of one per namespace).
        key = _EVERYWHERE if egress is None and self._mesh_all_open() else self.outbound_key(proxy)
        hit = self._by_host.get(key)
        if hit is None:
            imported: list[Resource] = []
            exact: dict[str, list[tuple[int, Resource]]] = {}
            wild: list[tuple[int, str, Resource]] = []
            hosts_of = self._hosts_of
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

    def route_inputs(self, vs: Resource) -> tuple[bool, tuple[str, ...]]:
        """http_route_inputs of a VirtualService, once per object (taken over by later snapshots' indexes)."""
        hit = self._inputs.get(id(vs))
        if hit is None or hit[0] is not vs:
            hit = self._inputs[id(vs)] = (vs, http_route_inputs(vs, self.mesh.domain_suffix))
        return hit[1]

    def _mesh_all_open(self) -> bool:
        """Whether every mesh VirtualService is exported to every namespace."""
        if self._all_open is None:
            self._all_open = all(open_ for _, _, open_ in self._bound(MESH_GATEWAY))
        return self._all_open

    def mesh_virtual_services(self, proxy: ProxyView) -> list[Resource]:
        """Mesh VirtualServices the proxy imports (exportTo and its Sidecar's egress hosts), oldest first."""
        return self._imported(proxy)[0]

    def non_service_hosts(self, proxy: ProxyView) -> list[tuple[Resource, list[str]]]:
        """The mesh VirtualServices the proxy imports that name hosts which are no service and no wildcard, with
        those hosts, oldest first (a sidecar gets a virtual host for each); once per import table, not per proxy."""
        imported = self._imported(proxy)[0]
        hit = self._non_service.get(id(imported))
        if hit is None or hit[0] is not imported:
            found = []
            for vs in imported:
                hosts = [h for h in dict.fromkeys(self.hosts_of(vs)) if "*" not in h and h not in self.services]
                if hosts:
                    found.append((vs, hosts))
            hit = self._non_service[id(imported)] = (imported, found)
        return hit[1]

    def hosts_of(self, vs: Resource) -> list[str]:
        """A VirtualService's hosts as FQDNs (computed once per snapshot)."""
        hosts = self._hosts_of.get(id(vs))
        return hosts if hosts is not None else vs_hosts(vs, self.mesh.domain_suffix)

    def mesh_virtual_services_for(self, proxy: ProxyView, hostname: str) -> list[Resource]:
        """Mesh VirtualServices the proxy imports whose hosts match `hostname`, oldest first."""
        exact, wild = self._imported(proxy)[1]
        if not wild:
            return [vs for _, vs in exact.get(hostname, ())]
        found = exact.get(hostname, []) + [(i, vs) for i, h, vs in wild if host_subset_of(hostname, h)]
        seen: set[int] = set()
        out = []
        for i, vs in sorted(found, key=lambda t: t[0]):
            if i not in seen:
                seen.add(i)
                out.append(vs)
        return out

    def _rules_by_ns(self) -> dict[str, list[tuple[str, Resource]]]:
        if self._rules is None:
            suffix = self.mesh.domain_suffix
            self._rules = {}
            for dr in self.of_kind("DestinationRule"):  # oldest first
                host = resolve_short_name(model_of(dr, DestinationRule).host or "", dr.namespace, suffix)
                self._rules.setdefault(dr.namespace, []).append((host, dr))
        return self._rules

    def destination_rule(self, proxy_ns: str, service: Service,
                         labels: Mapping[str, str] | None = None) -> Resource | None:
        """The rule for `service` seen by a proxy of `proxy_ns` with `labels` (Istio's PushContext.destinationRule
        then SidecarScope.DestinationRule): the first namespace of (proxy's, service's, root) with a rule for the
        most specific matching host decides; there, its rules merged as Istio merges them (drmerge), the first
        whose workloadSelector matches the proxy's labels (selector rules apply in their own namespace only, Istio
        keeps them private), else the last without selector, else none (Istio does not fall back to the next
        namespace then).

        Memoized per view and host: a proxy namespace none of whose own rules is for the host, and that no rule's
        exportTo names, sees what any such namespace sees (ANY_NAMESPACE), so the answers for hosts of other
        namespaces are kept once, not once per proxy namespace."""
        host = service.hostname
        own = (self._dr_own if self._dr_own is not None else self._dr_views()).get(proxy_ns)
        if own is None or (host not in own[0] and not (own[1] and any(host_subset_of(host, w) for w in own[1]))):
            found = self._dr_any.get(host)
            if found is None:
                found = self._dr_any[host] = self._candidates(ANY_NAMESPACE, service)
        else:
            answers = self._dr.get(proxy_ns)
            if answers is None:
                answers = self._dr[proxy_ns] = {}
            found = answers.get(host)
            if found is None:
                found = answers[host] = self._candidates(proxy_ns, service)
        selected, catch_all = found
        for selector, dr in selected:
            if labels is not None and selector_matches(selector, labels):
                return dr
        return catch_all

    def _dr_views(self) -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
        """Per namespace that sees some DestinationRules apart from other namespaces, the exact and the wildcard
        hosts of those rules: its own, and those whose exportTo names it (a host none of them covers is answered as
        for ANY_NAMESPACE); computed once, taken over while the rules stay."""
        if self._dr_own is None:
            hosts: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
            for ns, rules in self._rules_by_ns().items():
                for host, dr in rules:
                    named = [n for n in model_of(dr, DestinationRule).export_to or () if n not in (".", "*", "~")]
                    for viewer in (ns, *named):
                        exact, wild = hosts.setdefault(viewer, ({}, {}))
                        (wild if "*" in host else exact)[host] = None
            self._dr_own = {ns: (frozenset(exact), tuple(wild)) for ns, (exact, wild) in hosts.items()}
        return self._dr_own

    def _candidates(self, proxy_ns: str, service: Service) -> DrAnswer:
        rules = self._rules_by_ns()
        for ns in (proxy_ns, service.namespace, self.mesh.root_namespace):
            best: tuple[int, str] | None = None
            for host, dr in rules.get(ns, ()):
                if not self._rule_visible(dr, ns, proxy_ns) or not host_subset_of(service.hostname, host):
                    continue
                specificity = 1 << 30 if host == service.hostname else len(host)
                if best is None or specificity > best[0]:
                    best = (specificity, host)
            if best is None:
                continue
            chosen = [dr for host, dr in rules[ns] if host == best[1] and self._rule_visible(dr, ns, proxy_ns)]
            merged = self._merged.get(key := tuple(id(dr) for dr in chosen))
            if merged is None:  # several rules for the host: merged as Istio's mergeDestinationRule (drmerge)
                merged = self._merged[key] = drmerge.consolidate(chosen)
            selected = [(sel, dr) for dr in merged if (sel := _dr_selector(dr)) is not None]
            # Istio's SidecarScope.DestinationRule: the last consolidated rule without a selector is the catch-all
            return selected, next((dr for dr in reversed(merged) if _dr_selector(dr) is None), None)
        return [], None

    @staticmethod
    def _rule_visible(dr: Resource, ns: str, proxy_ns: str) -> bool:
        if _dr_selector(dr) is not None:  # Istio: rules with a workloadSelector are not exported
            return ns == proxy_ns
        return ns == proxy_ns or exported_to(model_of(dr, DestinationRule).export_to or (), dr.namespace, proxy_ns)

    def dr_selectors(self) -> dict[str, tuple[tuple[tuple[str, str], ...], ...]]:
        """Per namespace, the workloadSelectors of its DestinationRules (what a proxy's outbound config reads of its
        labels for them; computed once, taken over while the rules stay)."""
        if self._dr_sel is None:
            found: dict[str, dict[tuple[tuple[str, str], ...], None]] = {}
            for dr in self.of_kind("DestinationRule"):
                sel = _dr_selector(dr)
                if sel is not None:
                    found.setdefault(dr.namespace, {})[tuple(sorted((str(k), str(v)) for k, v in sel.items()))] = None
            self._dr_sel = {ns: tuple(sels) for ns, sels in found.items()}
        return self._dr_sel


_dr_selector = drmerge.selector  # a DestinationRule's workloadSelector matchLabels, None without one


def bound_gateways(vs: Resource) -> set[str]:
    """The gateways a VirtualService applies to as `mesh` or `ns/name` (none listed = `mesh`)."""
    names = model_of(vs, VirtualService).gateways or (MESH_GATEWAY,)
    return {gateway_ref(str(g), vs.namespace) for g in names}


def gateway_ref(name: str, namespace: str) -> str:
    """`name` -> `namespace/name`; `ns/name` and `mesh` stay."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    return f"{namespace}/{name}"


def vs_hosts(vs: Resource, domain_suffix: str) -> list[str]:
    """A VirtualService's hosts as FQDNs (short names resolved in its namespace)."""
    return [resolve_short_name(h, vs.namespace, domain_suffix) for h in model_of(vs, VirtualService).hosts or ()]


