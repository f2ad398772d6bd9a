"""ServiceEntry analyzers: addresses needed for TCP ports, conflicting protocols on one host:port."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context, export_scope
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_map
from sailmesh.api.models.networking import ServiceEntry
from sailmesh.api.resource import Resource


def _auto_allocate(ctx: Context) -> bool:
    dc = as_map(ctx.mesh_config.get("defaultConfig"))
    meta = as_map(dc.get("proxyMetadata")) if isinstance(dc, Mapping) else {}
    return isinstance(meta, Mapping) and str(meta.get("ISTIO_META_DNS_AUTO_ALLOCATE", "")).lower() == "true"


class ProtocolAddressesAnalyzer(Analyzer):
    """ServiceEntry ports without a protocol or with TCP need addresses (unless DNS auto-allocation is on)."""

    name = "serviceentry.ProtocolAddressesAnalyzer"
    messages = (msg.ServiceEntryAddressesRequired,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        if _auto_allocate(ctx):
            return
        for se in ctx.of("ServiceEntry"):
            entry = ctx.model(se, ServiceEntry)
            if entry is None or entry.addresses:
                continue
            status = se.raw.get("status")  # status is not part of the spec model
            if isinstance(status, Mapping) and status.get("addresses"):
                continue
            for i, port in enumerate(entry.ports or ()):
                if (port.protocol or "").upper() in ("", "TCP"):
                    yield diag(msg.ServiceEntryAddressesRequired, se, path=f"spec.ports[{i}]")
                    break


def _visible_together(a: Resource, b: Resource) -> bool:
    sa, sb = export_scope(a), export_scope(b)
    return sa is None or sb is None or bool(sa & sb)


class ConflictingServiceEntryProtocolAnalyzer(Analyzer):
    """ServiceEntries visible together must not give one host and port different protocols."""

    name = "serviceentry.ConflictingServiceEntryProtocolAnalyzer"
    messages = (msg.ConflictingServiceEntryProtocol,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        entries: list[tuple[Resource, str, int, str]] = []
        for se in ctx.of("ServiceEntry"):
            entry = ctx.model(se, ServiceEntry)
            if entry is None:
                continue
            for h in entry.hosts or ():
                for p in entry.ports or ():
                    if p.number is not None:
                        entries.append((se, h, p.number, (p.protocol or "").upper()))
        done: set[tuple[int, str, int]] = set()
        for se, host, port, proto in entries:
            others = [e for e in entries if e[0] is not se and e[1] == host and e[2] == port and e[3] != proto
                      and _visible_together(se, e[0])]
            if not others or (id(se), host, port) in done:
                continue
            done.add((id(se), host, port))
            group = sorted({(f"{r.namespace}/{r.name}", pr) for r, _, _, pr in [(se, host, port, proto), *others]})
            yield diag(msg.ConflictingServiceEntryProtocol, se, ", ".join(n for n, _ in group), host, port,
                       ", ".join(sorted({pr for _, pr in group})), path="spec.ports")
