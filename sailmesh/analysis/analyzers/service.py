"""Service port analyzer: Istio's port naming convention, and ExternalName services with TCP ports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.k8s import SYSTEM_NAMESPACES, port_protocol
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list


class PortNameAnalyzer(Analyzer):
    """Port names must carry a protocol (`http`, `grpc-x`, ...) unless appProtocol is set."""

    name = "service.PortNameAnalyzer"
    messages = (msg.PortNameIsNotUnderNamingConvention, msg.ExternalNameServiceTypeInvalidPortName)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for svc in ctx.of("Service"):
            if svc.namespace in SYSTEM_NAMESPACES or "istio" in svc.labels or svc.labels.get("release") == "istio":
                continue
            external = svc.spec.get("type") == "ExternalName"
            for i, port in enumerate(as_list(svc.spec.get("ports"))):
                if not isinstance(port, Mapping):
                    continue
                path = f"spec.ports[{i}]"
                proto = port_protocol(str(port.get("name") or ""))
                if external:
                    if proto in ("", "TCP"):
                        yield diag(msg.ExternalNameServiceTypeInvalidPortName, svc, path=path)
                        break
                    continue
                if port.get("appProtocol") or proto:
                    continue
                target = port.get("targetPort")
                yield diag(msg.PortNameIsNotUnderNamingConvention, svc, str(port.get("name") or ""),
                           port.get("port", 0), str(target if target is not None else 0), path=path)
