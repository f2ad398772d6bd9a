"""`sailmesh x describe service|workload NAME`: what applies to it in the running mesh, and where that conflicts.

  sailmesh x describe service reviews            # VirtualServices, DestinationRule and subsets, gateways, mTLS mode,
                                                 #   policies, Sidecars; warnings such as a subset with no pods
  sailmesh x describe workload reviews-v1-0 -n default
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.api.hosts import exported_to, hosts_match, resolve_short_name, selector_matches
from sailmesh.api.resource import DEFAULT_NAMESPACE, Resource, ResourceKey
from sailmesh.cli.common import add_state_dir, fail
from sailmesh.errors import PlatformError
from sailmesh.registry.protocol import infer
from sailmesh.settings import MeshDefaults

MESH = MeshDefaults()
PA_MODES = ("STRICT", "PERMISSIVE", "DISABLE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("service", "svc", "workload", "pod"))
    parser.add_argument("name")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    add_state_dir(parser)


def _spec(r: Resource) -> Mapping[str, Any]:
    return r.spec if isinstance(r.spec, Mapping) else {}


def _selects(r: Resource, pod: Resource) -> bool:
    """Istio's workload selection for policies and Sidecars: same namespace (or the root namespace, mesh-wide),
    and the `selector.matchLabels` (or `workloadSelector.labels`) match; no selector selects every workload."""
    if r.namespace not in (pod.namespace, MESH.root_namespace):
        return False
    sel = _spec(r).get("selector") or _spec(r).get("workloadSelector") or {}
    labels = sel.get("matchLabels", sel.get("labels")) if isinstance(sel, Mapping) else None
    return selector_matches(labels, pod.labels) if labels else True


def peer_authentication_mode(pas: Iterable[Resource], pod: Resource) -> tuple[str, str]:
    """The PeerAuthentication mode in force for a pod and the policy that set it (Istio's precedence: workload
    selector in its namespace > namespace-wide > mesh-wide in the root namespace > PERMISSIVE; UNSET inherits)."""
    ranked: list[tuple[int, Resource]] = []
    for pa in pas:
        if not _selects(pa, pod):
            continue
        level = 0 if _spec(pa).get("selector") and pa.namespace == pod.namespace else \
            1 if pa.namespace == pod.namespace else 2
        ranked.append((level, pa))
    for _, pa in sorted(ranked, key=lambda x: (x[0], x[1].creation_key)):
        mode = str((_spec(pa).get("mtls") or {}).get("mode", "UNSET")).upper()
        if mode in PA_MODES:
            return mode, f"PeerAuthentication {pa.namespace}/{pa.name}"
    return "PERMISSIVE", "the default (no PeerAuthentication)"


def _routes(vs: Resource) -> list[str]:
    out = []
    for kind in ("http", "tcp", "tls"):
        for rule in _spec(vs).get(kind) or []:
            dests = [f"{d.get('destination', {}).get('host', '')}"
                     + (f" subset {d['destination']['subset']}" if d.get("destination", {}).get("subset") else "")
                     + (f" {d['weight']}%" if "weight" in d else "") for d in rule.get("route") or []]
            match = " (with match)" if rule.get("match") else ""
            out.append(f"{kind}{match} -> " + ", ".join(dests))
    return out


def find(live: list[Resource], kind: str, name: str, ns: str, what: str) -> Resource:
    """The resource, or PlatformError naming the ones of that kind in the namespace."""
    found = next((r for r in live if r.kind == kind and r.name == name and r.namespace == ns), None)
    if found is None:
        names = sorted(r.name for r in live if r.kind == kind and r.namespace == ns)
        raise PlatformError(f'{what} "{name}" not found in namespace {ns}; {what}s there: '
                            + (", ".join(names) or "none"))
    return found


def describe_service(live: list[Resource], name: str, ns: str,
                     messages: list[dict[str, str]] | None = None) -> list[str]:
    svc = find(live, "Service", name, ns, "service")
    fqdn = f"{name}.{ns}.svc.{MESH.domain_suffix}"
    selector = _spec(svc).get("selector") or {}
    pods = [p for p in live
            if p.kind == "Pod" and p.namespace == ns and selector and selector_matches(selector, p.labels)]
    lines = [f"Service: {name}.{ns} ({fqdn})"]
    for port in _spec(svc).get("ports") or []:
        # the protocol Istio derives (appProtocol, else the port name's prefix, else TCP), which decides routing
        protocol = infer(int(port.get("port", 0) or 0), str(port.get("name", "")), port.get("appProtocol"),
                         str(port.get("protocol", "TCP")))
        lines.append(f"   Port: {port.get('name', '')} {port.get('port')}/{protocol}"
                     f" targets pod port {port.get('targetPort', port.get('port'))}")
    lines.append(f"Pods: {', '.join(p.name for p in pods) or 'none (no endpoints: requests fail with 503 UH)'}")
    warnings: list[str] = []
    related: set[ResourceKey] = {svc.key}

    drs = [dr for dr in live if dr.kind == "DestinationRule"
           and resolve_short_name(str(_spec(dr).get("host", "")), dr.namespace) == fqdn
           and exported_to(_spec(dr).get("exportTo") or (), dr.namespace, ns)]
    subsets: set[str] = set()
    for dr in drs:
        related.add(dr.key)
        tls = (_spec(dr).get("trafficPolicy") or {}).get("tls", {}).get("mode")
        lines.append(f"DestinationRule: {dr.name}.{dr.namespace}" + (f" (tls {tls})" if tls else ""))
        for sub in _spec(dr).get("subsets") or []:
            labels = sub.get("labels") or {}
            chosen = [p.name for p in pods if selector_matches(labels, p.labels)]
            subsets.add(str(sub.get("name", "")))
            lines.append(f"   Subset {sub.get('name')} ({', '.join(f'{k}={v}' for k, v in labels.items())}): "
                         + (", ".join(chosen) or "no pods"))
            if not chosen:
                warnings.append(f"subset {sub.get('name')} of DestinationRule {dr.name}.{dr.namespace} selects no "
                                "pods: requests routed to it fail with 503 UH")
    if not drs:
        lines.append("DestinationRule: none (no subsets; auto mTLS decides TLS)")

    for vs in (r for r in live if r.kind == "VirtualService"):
        hosts = [resolve_short_name(str(h), vs.namespace) for h in _spec(vs).get("hosts") or []]
        targets = {resolve_short_name(str(d.get("destination", {}).get("host", "")), vs.namespace): d
                   for kind in ("http", "tcp", "tls") for rule in _spec(vs).get(kind) or []
                   for d in rule.get("route") or []}
        gateways = _spec(vs).get("gateways") or ["mesh"]
        # A VirtualService applies to the service's callers in the mesh when it is bound to the mesh and its hosts
        # name the service; one bound only to gateways (hosts: the names clients use there, often "*") only when
        # it routes to the service: istioctl x describe names the ingress routes that reach the service.
        captures = "mesh" in gateways and any(hosts_match(h, fqdn) for h in hosts)
        if not captures and fqdn not in targets:
            continue
        related.add(vs.key)
        lines.append(f"VirtualService: {vs.name}.{vs.namespace} (gateways: {', '.join(gateways)})")
        lines += [f"   {r}" for r in _routes(vs)]
        for gw in (g for g in gateways if g != "mesh" and fqdn in targets):
            lines.append(f"   Exposed through Gateway {gw}")
        for host, d in targets.items():
            sub = d.get("destination", {}).get("subset")
            if host == fqdn and sub and sub not in subsets:
                warnings.append(f"VirtualService {vs.name}.{vs.namespace} routes to subset {sub}, which no "
                                "DestinationRule defines: those requests fail with 503 (NC/UH)")

    for pod in pods[:1]:  # policies are per workload; the service's pods usually share them
        mode, why = peer_authentication_mode((r for r in live if r.kind == "PeerAuthentication"), pod)
        lines.append(f"mTLS (PeerAuthentication) for {pod.name}: {mode}, from {why}")
        lines += _policies(live, pod, related)
    lines += [f"Warning: {w}" for w in warnings]
    lines += _analysis(live, related, messages)
    return lines


def _policies(live: list[Resource], pod: Resource, related: set[ResourceKey]) -> list[str]:
    lines = []
    for kind in ("AuthorizationPolicy", "RequestAuthentication", "Sidecar"):
        found = [r for r in live if r.kind == kind and _selects(r, pod)]
        related.update(r.key for r in found)
        for r in found:
            action = f" ({_spec(r).get('action', 'ALLOW')})" if kind == "AuthorizationPolicy" else ""
            lines.append(f"{kind}: {r.name}.{r.namespace}{action}")
    return lines


def _analysis(live: list[Resource], related: set[ResourceKey],
              messages: list[dict[str, str]] | None = None) -> list[str]:
    """The analyzers' messages (Warning and above) about the resources shown: the control plane's (`messages`),
    else computed here (an older control plane; the analyzers then load, which takes a while)."""
    if messages is not None:
        keys = {str(k) for k in related}
        return [f"Analysis: {m['text']}" for m in messages if m.get("resource") in keys]
    from sailmesh.analysis.diagnostic import at_least  # the analyzers load only when a describe runs (`x` starts fast)
    from sailmesh.analysis.registry import analyze

    return [f"Analysis: {d.render()}" for d in analyze(live)
            if d.resource is not None and d.resource.key in related and at_least(d.level, "Warning")]


def describe_workload(live: list[Resource], name: str, ns: str,
                      messages: list[dict[str, str]] | None = None) -> list[str]:
    pod = find(live, "Pod", name, ns, "workload")
    containers = [c.get("name") for c in (pod.spec.get("containers") or []) if isinstance(c, Mapping)]
    lines = [f"Workload: {pod.name}.{pod.namespace}",
             f"   Labels: {', '.join(f'{k}={v}' for k, v in pod.labels.items())}",
             f"   Sidecar: {'yes' if 'istio-proxy' in containers else 'no (outside the mesh)'}"]
    mode, why = peer_authentication_mode((r for r in live if r.kind == "PeerAuthentication"), pod)
    lines.append(f"mTLS (PeerAuthentication): {mode}, from {why}")
    related: set[ResourceKey] = {pod.key}
    lines += _policies(live, pod, related)
    services = [s for s in live if s.kind == "Service" and s.namespace == ns and _spec(s).get("selector")
                and selector_matches(_spec(s)["selector"], pod.labels)]
    for svc in services:
        lines.append("")
        lines += describe_service(live, svc.name, ns, messages)
    if not services:
        lines.append("Services: none select this workload")
    return lines


def live_mesh(args: argparse.Namespace) -> tuple[list[Resource], list[dict[str, str]] | None]:
    """The running mesh's config and workloads (as Pods and Namespaces) and the control plane's analyzer
    messages about them (None from a control plane that does not serve them); PlatformError when none runs."""
    from sailmesh.api.parse import resource_from_dict
    from sailmesh.api.resource import Source
    from sailmesh.cli.apiclient import call
    from sailmesh.cli.common import running_mesh

    mesh = running_mesh(args)
    status, body = call(mesh.api_url, "GET", "/api/v1/live")
    if status != 200:
        raise PlatformError(f"the control plane answered HTTP {status}: {(body or {}).get('errors')}")
    live = [resource_from_dict(dict(d), Source(LIVE_SOURCE)) for d in body.get("items", [])]
    status, found = call(mesh.api_url, "GET", "/api/v1/analysis")
    return live, (list(found.get("items", [])) if status == 200 and isinstance(found, dict) else None)


LIVE_SOURCE = ""  # as controlplane.live names it: a live resource has no file


def run(args: argparse.Namespace) -> int:
    try:
        live, messages = live_mesh(args)
        fn = describe_service if args.what in ("service", "svc") else describe_workload
        lines = fn(live, args.name, args.namespace, messages)
    except PlatformError as e:
        return fail(str(e))
    print("\n".join(lines))
    return 0
