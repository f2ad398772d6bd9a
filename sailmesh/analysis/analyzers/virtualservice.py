"""VirtualService analyzers: destination hosts/ports, subsets, gateways, mesh host conflicts, JWT routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.vsutil import (
    MESH_GATEWAY,
    all_destinations,
    find_services,
    gateways_of,
    split_ref,
    vs_namespaces,
)
from sailmesh.analysis.context import Context, export_to
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map
from sailmesh.api.hosts import analyzer_fqdn, exported_to, host_subset_of, hosts_match, selector_matches
from sailmesh.api.resource import Resource


def _port_number(dest: Mapping[str, object]) -> int | None:
    port = dest.get("port")
    if isinstance(port, Mapping) and port.get("number") is not None:
        try:
            return int(port["number"])  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return None
    return None


class DestinationHostAnalyzer(Analyzer):
    """Destination hosts must exist (visible to the VS), ports must exist or be given when ambiguous."""

    name = "virtualservice.DestinationHostAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.VirtualServiceDestinationPortSelectorRequired,
                msg.IngressRouteRulesNotAffected)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for vs in ctx.of("VirtualService"):
            yield from self._destinations(ctx, vs)
            yield from self._ingress_subsets(ctx, vs)

    def _destinations(self, ctx: Context, vs: Resource) -> Iterable[Diagnostic]:
        for path, dest in all_destinations(vs):
            host = str(dest.get("host") or "")
            if not host:
                continue
            found = None
            for ns in vs_namespaces(vs):
                svcs = find_services(ctx, host, ns)
                if not svcs:
                    found = None
                    break
                found = svcs
            if not found:
                yield diag(msg.ReferencedResourceNotFound, vs, "host", host, path=f"{path}.host")
                continue
            ports = [p for _, r, ps in found if r.kind == "Service" or ps for p in ps]
            if not any(r.kind == "Service" or ps for _, r, ps in found):
                continue
            number = _port_number(dest)
            if number is None:
                if len(ports) > 1:
                    nums = [p.get("number", p.get("port")) for p in ports if isinstance(p, Mapping)]
                    yield diag(msg.VirtualServiceDestinationPortSelectorRequired, vs, host, nums, path=path)
            elif not any(isinstance(p, Mapping) and p.get("number", p.get("port")) == number for p in ports):
                yield diag(msg.ReferencedResourceNotFound, vs, "host+port", f"{host}+{number}", path=path)

    def _ingress_subsets(self, ctx: Context, vs: Resource) -> Iterable[Diagnostic]:
        gws = [g for g in gateways_of(vs) if g != MESH_GATEWAY]
        if not gws:
            return
        for path, dest in all_destinations(vs):
            if dest.get("subset"):
                continue
            host = analyzer_fqdn(str(dest.get("host") or ""), vs.namespace)
            for other in ctx.of("VirtualService"):
                if other is vs or MESH_GATEWAY not in gateways_of(other):
                    continue
                ohosts = [analyzer_fqdn(str(h), other.namespace) for h in as_list(other.spec.get("hosts"))]
                if host not in ohosts:
                    continue
                if any(d.get("subset") for _, d in all_destinations(other)):
                    yield diag(msg.IngressRouteRulesNotAffected, vs, f"{other.namespace}/{other.name}", ",".join(gws),
                               path=path)
                    return


class DestinationRuleAnalyzer(Analyzer):
    """Destination subsets must be defined in a DestinationRule for that host."""

    name = "virtualservice.DestinationRuleAnalyzer"
    messages = (msg.ReferencedResourceNotFound,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        exact: dict[str, list[Resource]] = {}
        wildcard: list[tuple[str, Resource]] = []
        for dr in ctx.of("DestinationRule"):
            h = analyzer_fqdn(str(dr.spec.get("host") or ""), dr.namespace)
            if h.startswith("*"):
                wildcard.append((h, dr))
            else:
                exact.setdefault(h, []).append(dr)
        for vs in ctx.of("VirtualService"):
            for path, dest in all_destinations(vs):
                subset = dest.get("subset")
                host = str(dest.get("host") or "")
                if not subset or not host:
                    continue
                full = analyzer_fqdn(host, vs.namespace)
                if full.startswith("*"):
                    candidates = [dr for dr in ctx.of("DestinationRule")
                                  if hosts_match(analyzer_fqdn(str(dr.spec.get("host") or ""), dr.namespace), full)]
                else:
                    candidates = [*exact.get(full, []), *(dr for h, dr in wildcard if host_subset_of(full, h))]
                ok = False
                for dr in candidates:
                    if not exported_to(export_to(dr), dr.namespace, vs.namespace):
                        continue
                    if any(isinstance(s, Mapping) and s.get("name") == subset for s in as_list(dr.spec.get("subsets"))):
                        ok = True
                        break
                if not ok:
                    yield diag(msg.ReferencedResourceNotFound, vs, "host+subset in destinationrule",
                               f"{host}+{subset}", path=f"{path}.subset")


def _gateway_hosts_for(gw: Resource, vs_namespace: str) -> list[str]:
    """Server hosts of a Gateway usable by a VirtualService in vs_namespace (`ns/host` form honoured)."""
    out = []
    for server in as_list(gw.spec.get("servers")):
        if not isinstance(server, Mapping):
            continue
        for h in as_list(server.get("hosts")):
            h = str(h)
            if "/" in h:
                ns, _, name = h.partition("/")
                ns = gw.namespace if ns == "." else ns
                if ns not in ("*", vs_namespace):
                    continue
                h = name
            out.append(h)
    return out


class GatewayAnalyzer(Analyzer):
    """Referenced gateways must exist, and the VS hosts must be served by each gateway."""

    name = "virtualservice.GatewayAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.VirtualServiceHostNotFoundInGateway, msg.ReferencedInternalGateway)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for vs in ctx.of("VirtualService"):
            vs_hosts = [str(h) for h in as_list(vs.spec.get("hosts"))]
            for i, ref in enumerate(as_list(vs.spec.get("gateways"))):
                ref = str(ref)
                if ref == MESH_GATEWAY:
                    continue
                path = f"spec.gateways[{i}]"
                if "~istio-autogenerated-" in ref:
                    yield diag(msg.ReferencedInternalGateway, vs, f"{vs.namespace}/{vs.name}", ref, path=path)
                    continue
                ns, name = split_ref(ref, vs.namespace)
                gw = ctx.get("Gateway", ns, name)
                if gw is None:
                    yield diag(msg.ReferencedResourceNotFound, vs, "gateway", ref, path=path)
                gw_hosts = _gateway_hosts_for(gw, vs.namespace) if gw else []
                if not any(hosts_match(g, h) for g in gw_hosts for h in vs_hosts):
                    yield diag(msg.VirtualServiceHostNotFoundInGateway, vs, vs_hosts, f"{vs.namespace}/{vs.name}",
                               f"{ns}/{name}", path=path)


class ConflictingMeshGatewayHostsAnalyzer(Analyzer):
    """Two mesh-bound VirtualServices visible in a common namespace must not define the same host."""

    name = "virtualservice.ConflictingMeshGatewayHostsAnalyzer"
    messages = (msg.ConflictingMeshGatewayVirtualServiceHosts,)

    @staticmethod
    def _scope(vs: Resource) -> set[str] | None:
        val = vs.spec.get("exportTo")
        if not isinstance(val, list) or not val or "*" in val:
            return None
        return {vs.namespace if str(e) == "." else str(e) for e in val}

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        mesh_vs = [v for v in ctx.of("VirtualService") if MESH_GATEWAY in gateways_of(v)]
        entries = [(v, analyzer_fqdn(str(h), v.namespace)) for v in mesh_vs for h in as_list(v.spec.get("hosts"))]
        exact: dict[str, list[tuple[Resource, str]]] = {}
        wildcard: list[tuple[Resource, str]] = []
        for e in entries:
            (wildcard if e[1].startswith("*") else exact.setdefault(e[1], [])).append(e)
        reported: set[tuple[int, str]] = set()
        for vs, host in entries:
            conflicts = []
            candidates = entries if host.startswith("*") else [*exact.get(host, []), *wildcard]
            for other, ohost in candidates:
                if other is vs or not hosts_match(host, ohost):
                    continue
                a, b = self._scope(vs), self._scope(other)
                if a is not None and b is not None and not (a & b):
                    continue
                conflicts.append(other)
            if conflicts and (id(vs), host) not in reported:
                reported.add((id(vs), host))
                names = ",".join(sorted({f"{r.namespace}/{r.name}" for r in [vs, *conflicts]}))
                yield diag(msg.ConflictingMeshGatewayVirtualServiceHosts, vs, names, host, path="spec.hosts")


CLAIM_PREFIX = "@request.auth.claims"


class JWTClaimRouteAnalyzer(Analyzer):
    """Routing on JWT claims at a gateway needs a RequestAuthentication for the gateway pods."""

    name = "virtualservice.JWTClaimRouteAnalyzer"
    messages = (msg.JwtClaimBasedRoutingWithoutRequestAuthN,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for vs in ctx.of("VirtualService"):
            claims = []
            for rule in as_list(vs.spec.get("http")):
                for m in as_list(rule.get("match")) if isinstance(rule, Mapping) else []:
                    if isinstance(m, Mapping):
                        for section in ("headers", "withoutHeaders"):
                            claims += [k for k in as_map(m.get(section)) if str(k).startswith(CLAIM_PREFIX)]
            if not claims:
                continue
            for ref in as_list(vs.spec.get("gateways")):
                if ref == MESH_GATEWAY:
                    continue
                ns, name = split_ref(str(ref), vs.namespace)
                gw = ctx.get("Gateway", ns, name)
                if gw is None:
                    continue
                sel = as_map(gw.spec.get("selector"))
                pods = [p for p in ctx.workloads() if selector_matches(sel, p.labels)]
                targets = [(p.namespace, p.labels, p.name) for p in pods] or [(gw.namespace, sel, "")]
                for pns, labels, pname in targets:
                    if not self._has_authn(ctx, pns, labels):
                        yield diag(msg.JwtClaimBasedRoutingWithoutRequestAuthN, vs, claims[0], f"{ns}/{name}", pname)

    @staticmethod
    def _has_authn(ctx: Context, namespace: str, labels: Mapping[str, str]) -> bool:
        for ra in ctx.of("RequestAuthentication"):
            if ra.namespace not in (namespace, ctx.root_namespace):
                continue
            sel = (as_map(ra.spec.get("selector"))).get("matchLabels") or {}
            if selector_matches(sel, labels):
                return True
        return False
