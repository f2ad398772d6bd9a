"""Multi-cluster analyzers: unknown registries in meshNetworks, services that differ between clusters.

Offline, each input file that defines a Service stands for one cluster (as in Istio's multi-cluster tests).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map
from sailmesh.api.resource import Resource

BUILTIN_REGISTRIES = frozenset({"kubernetes", "external", "mock"})
MULTICLUSTER_LABEL = "istio/multiCluster"


class MeshNetworksAnalyzer(Analyzer):
    """Every meshNetworks endpoint fromRegistry must be the local registry or a remote cluster secret."""

    name = "multicluster.MeshNetworksAnalyzer"
    messages = (msg.UnknownMeshNetworksServiceRegistry,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        known = set(BUILTIN_REGISTRIES)
        for s in ctx.of("Secret"):
            if s.labels.get(MULTICLUSTER_LABEL) == "true":
                for section in ("data", "stringData"):
                    data = s.raw.get(section)
                    if isinstance(data, Mapping):
                        known.update(str(k).lower() for k in data)
        networks = as_map(ctx.mesh_networks.get("networks"))
        origin = f"MeshNetworks {ctx.root_namespace}/meshnetworks"
        for net_name, net in sorted(networks.items()) if isinstance(networks, Mapping) else []:
            for ep in (net or {}).get("endpoints") or []:
                reg = ep.get("fromRegistry") if isinstance(ep, Mapping) else None
                if reg and str(reg).lower() not in known:
                    yield Diagnostic(msg.UnknownMeshNetworksServiceRegistry, (str(reg), str(net_name)),
                                     origin_override=origin)


def _shape(svc: Resource) -> dict[str, Any]:
    spec = svc.spec
    ports = {
        str(p.get("port")): (str(p.get("name") or ""), str(p.get("protocol") or "TCP"))
        for p in as_list(spec.get("ports")) if isinstance(p, Mapping)
    }
    return {
        "type": str(spec.get("type") or "ClusterIP"),
        "headless": spec.get("clusterIP") == "None",
        "ports": ports,
    }


class ServiceAnalyzer(Analyzer):
    """A Service defined in several clusters (input files) should have the same type, mode and ports."""

    name = "multicluster.ServiceAnalyzer"
    messages = (msg.MultiClusterInconsistentService,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        groups: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        for s in ctx.of("Service"):
            groups[(s.namespace, s.name)].append(s)
        for (ns, name), svcs in groups.items():
            files = {s.source.file for s in svcs}
            if len(svcs) < 2 or len(files) < 2:
                continue
            base = _shape(svcs[0])
            problems: list[str] = []
            for other in svcs[1:]:
                shape = _shape(other)
                if shape["type"] != base["type"]:
                    problems.append("service type mismatch")
                if shape["headless"] != base["headless"]:
                    problems.append("mixed headless and clusterIP modes")
                if set(shape["ports"]) != set(base["ports"]):
                    problems.append("different port numbers")
                for port, (pname, proto) in shape["ports"].items():
                    if port in base["ports"]:
                        bname, bproto = base["ports"][port]
                        if pname != bname:
                            problems.append(f"port {port} named differently")
                        if proto != bproto:
                            problems.append(f"port {port} has different protocols")
            if problems:
                clusters = sorted(files)
                yield Diagnostic(msg.MultiClusterInconsistentService,
                                 (name, ns, clusters, sorted(set(problems))), svcs[0], "spec")
