"""Workload analyzers: services sharing a port with different protocols, reserved UID 1337."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.k8s import (
    SYSTEM_NAMESPACES,
    namespace_injected,
    pod_template,
    port_protocol,
    workload_opted_out,
)
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map
from sailmesh.api.hosts import selector_matches

WORKLOAD_KINDS = ("Deployment",)
PROXY_UID = 1337


class ServiceAssociationAnalyzer(Analyzer):
    """A meshed deployment's services must agree on protocol per port and on port per targetPort."""

    name = "deployment.ServiceAssociationAnalyzer"
    messages = (msg.DeploymentAssociatedToMultipleServices, msg.DeploymentConflictingPorts)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for dep in ctx.of(*WORKLOAD_KINDS):
            meta, _ = pod_template(dep)
            if dep.namespace in SYSTEM_NAMESPACES or workload_opted_out(meta):
                continue
            if not namespace_injected(ctx, dep.namespace):
                continue
            labels = {str(k): str(v) for k, v in (as_map(meta.get("labels"))).items()}
            svcs = [
                s for s in ctx.of("Service")
                if s.namespace == dep.namespace and isinstance(s.spec.get("selector"), Mapping)
                and s.spec.get("selector") and selector_matches(s.spec["selector"], labels)
            ]
            protocols: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
            targets: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
            for s in svcs:
                for p in as_list(s.spec.get("ports")):
                    if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
                        continue
                    proto = port_protocol(str(p.get("name") or "")) or str(p.get("protocol") or "TCP").upper()
                    protocols[p["port"]][proto].append(s.name)
                    target = p.get("targetPort", p["port"])
                    targets[str(target)][p["port"]].append(s.name)
            for port, by_proto in sorted(protocols.items()):
                if len(by_proto) > 1:
                    names = sorted({n for ns in by_proto.values() for n in ns})
                    yield diag(msg.DeploymentAssociatedToMultipleServices, dep, dep.name, port, names)
            for target, by_port in sorted(targets.items()):
                if len(by_port) > 1:
                    names = sorted({n for ns in by_port.values() for n in ns})
                    yield diag(msg.DeploymentConflictingPorts, dep, dep.name, names, target, sorted(by_port))


def _uid(sc: Any) -> Any:
    return sc.get("runAsUser") if isinstance(sc, Mapping) else None


class ApplicationUIDAnalyzer(Analyzer):
    """Application pods and containers must not run as UID 1337, which the sidecar uses."""

    name = "deployment.ApplicationUIDAnalyzer"
    messages = (msg.InvalidApplicationUID,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for r in ctx.of("Pod", *WORKLOAD_KINDS):
            _, spec = pod_template(r)
            if not isinstance(spec, Mapping):
                continue
            bad = _uid(spec.get("securityContext")) == PROXY_UID
            for c in as_list(spec.get("containers")):
                if not isinstance(c, Mapping) or c.get("name") == "istio-proxy":
                    continue
                if _uid(c.get("securityContext")) == PROXY_UID:
                    bad = True
            if bad:
                yield diag(msg.InvalidApplicationUID, r)
