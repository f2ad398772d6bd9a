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
from sailmesh.analysis.context import Context, ServiceInfo, export_scope
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api.hosts import analyzer_fqdn, exported_to, host_subset_of, hosts_match, selector_matches
from sailmesh.api.models.networking import DestinationRule, Gateway, VirtualService
from sailmesh.api.models.security import RequestAuthentication
from sailmesh.api.resource import Resource


class DestinationHostAnalyzer(Analyzer):
    """Destination hosts must exist (visible to the VS), ports must exist or be given when ambiguous."""

    name = "virtualservice.DestinationHostAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.VirtualServiceDestinationPortSelectorRequired,
                msg.IngressRouteRulesNotAffected)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for vs in ctx.of("VirtualService"):
            spec = ctx.model(vs, VirtualService)
            if spec is None:
                continue
            yield from self._destinations(ctx, vs, spec)
            yield from self._ingress_subsets(ctx, vs, spec)

    def _destinations(self, ctx: Context, vs: Resource, spec: VirtualService) -> Iterable[Diagnostic]:
        for path, dest in all_destinations(spec):
            host = dest.host or ""
            if not host:
                continue
            found: list[ServiceInfo] = []
            for ns in vs_namespaces(vs, spec):
                found = find_services(ctx, host, ns)
                if not found:
                    break
            if not found:
                yield diag(msg.ReferencedResourceNotFound, vs, "host", host, path=f"{path}.host")
                continue
            # ServiceEntry hosts without ports say nothing about ports; Services always do
            with_ports = [s for s in found if s.resource.kind == "Service" or s.port_numbers]
            if not with_ports:
                continue
            ports = [p for s in with_ports for p in s.port_numbers]
            number = dest.port.number if dest.port is not None else None
            if number is None:
                if len(ports) > 1:
                    yield diag(msg.VirtualServiceDestinationPortSelectorRequired, vs, host, ports, path=path)
            elif number not in ports:
                yield diag(msg.ReferencedResourceNotFound, vs, "host+port", f"{host}+{number}", path=path)

    def _ingress_subsets(self, ctx: Context, vs: Resource, spec: VirtualService) -> Iterable[Diagnostic]:
        gws = [g for g in gateways_of(spec) if g != MESH_GATEWAY]
        if not gws:
            return
        for path, dest in all_destinations(spec):
            if dest.subset:
                continue
            host = analyzer_fqdn(dest.host or "", vs.namespace)
            for other in ctx.of("VirtualService"):
                ospec = ctx.model(other, VirtualService)
                if other is vs or ospec is None or MESH_GATEWAY not in gateways_of(ospec):
                    continue
                if host not in [analyzer_fqdn(h, other.namespace) for h in ospec.hosts or ()]:
                    continue
                if any(d.subset for _, d in all_destinations(ospec)):
                    yield diag(msg.IngressRouteRulesNotAffected, vs, f"{other.namespace}/{other.name}", ",".join(gws),
                               path=path)
                    return


class DestinationRuleAnalyzer(Analyzer):
    """Destination subsets must be defined in a DestinationRule for that host."""

    name = "virtualservice.DestinationRuleAnalyzer"
    messages = (msg.ReferencedResourceNotFound,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        rules: list[tuple[str, Resource, DestinationRule]] = []  # (FQDN host, resource, model)
        for dr in ctx.of("DestinationRule"):
            rule = ctx.model(dr, DestinationRule)
            if rule is not None:
                rules.append((analyzer_fqdn(rule.host or "", dr.namespace), dr, rule))
        exact: dict[str, list[tuple[str, Resource, DestinationRule]]] = {}
        wildcard = [e for e in rules if e[0].startswith("*")]
        for e in rules:
            if not e[0].startswith("*"):
                exact.setdefault(e[0], []).append(e)
        for vs in ctx.of("VirtualService"):
            spec = ctx.model(vs, VirtualService)
            for path, dest in all_destinations(spec) if spec is not None else ():
                subset, host = dest.subset, dest.host or ""
                if not subset or not host:
                    continue
                full = analyzer_fqdn(host, vs.namespace)
                if full.startswith("*"):
                    candidates = [e for e in rules if hosts_match(e[0], full)]
                else:
                    candidates = [*exact.get(full, []), *(e for e in wildcard if host_subset_of(full, e[0]))]
                if not any(exported_to(rule.export_to or (), dr.namespace, vs.namespace) and rule.subset(subset)
                           for _, dr, rule in candidates):
                    yield diag(msg.ReferencedResourceNotFound, vs, "host+subset in destinationrule",
                               f"{host}+{subset}", path=f"{path}.subset")


def _gateway_hosts_for(gw: Resource, spec: Gateway, vs_namespace: str) -> list[str]:
    """Server hosts of a Gateway usable by a VirtualService in vs_namespace (`ns/host` form honoured)."""
    out = []
    for server in spec.servers or ():
        for h in server.hosts or ():
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
            spec = ctx.model(vs, VirtualService)
            if spec is None:
                continue
            vs_hosts = list(spec.hosts or ())
            for i, ref in enumerate(spec.gateways or ()):
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
                gw_spec = ctx.model(gw, Gateway) if gw is not None else None
                gw_hosts = _gateway_hosts_for(gw, gw_spec, vs.namespace) if gw is not None and gw_spec else []
                if not any(hosts_match(g, h) for g in gw_hosts for h in vs_hosts):
                    yield diag(msg.VirtualServiceHostNotFoundInGateway, vs, vs_hosts, f"{vs.namespace}/{vs.name}",
                               f"{ns}/{name}", path=path)


class ConflictingMeshGatewayHostsAnalyzer(Analyzer):
    """Two mesh-bound VirtualServices visible in a common namespace must not define the same host."""

    name = "virtualservice.ConflictingMeshGatewayHostsAnalyzer"
    messages = (msg.ConflictingMeshGatewayVirtualServiceHosts,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        entries: list[tuple[Resource, str]] = []
        for v in ctx.of("VirtualService"):
            spec = ctx.model(v, VirtualService)
            if spec is not None and MESH_GATEWAY in gateways_of(spec):
                entries.extend((v, analyzer_fqdn(h, v.namespace)) for h in spec.hosts or ())
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
                a, b = export_scope(vs), export_scope(other)
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
            spec = ctx.model(vs, VirtualService)
            if spec is None:
                continue
            claims = [k for rule in spec.http or () for m in rule.match or ()
                      for headers in (m.headers, m.without_headers) for k in headers or {}
                      if k.startswith(CLAIM_PREFIX)]
            if not claims:
                continue
            for ref in spec.gateways or ():
                if ref == MESH_GATEWAY:
                    continue
                ns, name = split_ref(ref, vs.namespace)
                gw = ctx.get("Gateway", ns, name)
                gw_spec = ctx.model(gw, Gateway) if gw is not None else None
                if gw is None or gw_spec is None:
                    continue
                sel = gw_spec.selector or {}
                pods = [p for p in ctx.workloads() if selector_matches(sel, p.labels)]
                targets = [(p.namespace, p.labels, p.name) for p in pods] or [(gw.namespace, sel, "")]
                for pns, labels, pname in targets:
                    if not self._has_authn(ctx, pns, labels):
                        yield diag(msg.JwtClaimBasedRoutingWithoutRequestAuthN, vs, claims[0], f"{ns}/{name}", pname)

    @staticmethod
    def _has_authn(ctx: Context, namespace: str, labels: Mapping[str, str]) -> bool:
        for ra in ctx.of("RequestAuthentication"):
            policy = ctx.model(ra, RequestAuthentication)
            if policy is None or ra.namespace not in (namespace, ctx.root_namespace):
                continue
            if selector_matches(policy.selector.match_labels if policy.selector else None, labels):
                return True
        return False
