"""Gateway analyzers: workload ports, credential secrets, duplicate certificates, conflicting servers."""

from __future__ import annotations

import base64
import datetime
import warnings
from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import selector_string
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map
from sailmesh.api.hosts import hosts_match, selector_matches
from sailmesh.api.models.networking import Gateway, Server
from sailmesh.api.resource import Resource


def gateways(ctx: Context) -> list[tuple[Resource, Gateway]]:
    """Every Gateway with its typed spec (those whose spec does not fit the model are skipped)."""
    return [(gw, spec) for gw in ctx.of("Gateway") if (spec := ctx.model(gw, Gateway)) is not None]


def gw_selector(spec: Gateway) -> Mapping[str, str]:
    return spec.selector or {}


def _port(server: Server) -> int | None:
    return server.port.number if server.port is not None else None


class IngressGatewayPortAnalyzer(Analyzer):
    """Every Gateway server port must be exposed by a Service selecting the gateway's pods."""

    name = "gateway.IngressGatewayPortAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.GatewayPortNotDefinedOnService)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for gw, spec in gateways(ctx):
            sel = gw_selector(spec)
            pods = [p for p in ctx.workloads() if selector_matches(sel, p.labels)]
            if not pods:
                yield diag(msg.ReferencedResourceNotFound, gw, "selector", selector_string(sel), path="spec.selector")
                continue
            ports: set[int] = set()
            for pod in pods:
                for svc in ctx.of("Service"):  # a core kind: its spec stays raw
                    ssel = svc.spec.get("selector")
                    if svc.namespace != pod.namespace or not isinstance(ssel, Mapping) or not ssel:
                        continue
                    if not selector_matches(ssel, pod.labels):
                        continue
                    for p in as_list(svc.spec.get("ports")):
                        if isinstance(p, Mapping) and str(p.get("protocol") or "TCP") == "TCP":
                            for key in ("port", "targetPort"):
                                if isinstance(p.get(key), int):
                                    ports.add(p[key])
            for i, server in enumerate(spec.servers or ()):
                n = _port(server)
                if n is not None and n not in ports:
                    yield diag(msg.GatewayPortNotDefinedOnService, gw, n, selector_string(sel),
                               path=f"spec.servers[{i}].port")


def gateway_namespace(ctx: Context, spec: Gateway) -> str:
    """Namespace of the first pod the Gateway selects ('' when none)."""
    sel = gw_selector(spec)
    for p in ctx.workloads():
        if selector_matches(sel, p.labels):
            return p.namespace
    return ""


def valid_tls_secret(secret: Resource) -> bool:
    """A kubernetes.io/tls style secret: tls.crt and tls.key present, the certificate parses and is current."""
    data = as_map(secret.raw.get("data"))
    if not isinstance(data, Mapping) or not data.get("tls.crt") or not data.get("tls.key"):
        return False
    try:
        pem = base64.b64decode(str(data["tls.crt"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cryptography import x509  # only for a Gateway's certificate (analyze starts without it)

            cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class SecretAnalyzer(Analyzer):
    """TLS credentialName secrets must exist in the gateway workload's namespace and be valid."""

    name = "gateway.SecretAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.InvalidGatewayCredential)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for gw, spec in gateways(ctx):
            ns = gateway_namespace(ctx, spec)
            if not ns:
                yield diag(msg.ReferencedResourceNotFound, gw, "selector", selector_string(gw_selector(spec)),
                           path="spec.selector")
                continue
            for i, server in enumerate(spec.servers or ()):
                cn = (server.tls.credential_name or "") if server.tls is not None else ""
                if not cn:
                    continue
                path = f"spec.servers[{i}].tls.credentialName"
                secret = ctx.get("Secret", ns, cn)
                if secret is None:
                    yield diag(msg.ReferencedResourceNotFound, gw, "credentialName", cn, path=path)
                elif not valid_tls_secret(secret):
                    yield diag(msg.InvalidGatewayCredential, gw, gw.name, gw.namespace, path=path)


def _subset(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return all(b.get(k) == v for k, v in a.items())


class CertificateAnalyzer(Analyzer):
    """Gateways on the same workloads must not share a TLS certificate (HTTP/2 connection reuse gives 404s)."""

    name = "gateway.CertificateAnalyzer"
    messages = (msg.GatewayDuplicateCertificate,)

    @staticmethod
    def _certs(spec: Gateway) -> set[tuple[str, str, str]]:
        out = set()
        for s in spec.servers or ():
            tls = s.tls
            if tls is not None:
                key = (tls.credential_name or "", tls.server_certificate or "", tls.private_key or "")
                if any(key):
                    out.add(key)
        return out

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        gws = gateways(ctx)
        for gw, spec in gws:
            mine = self._certs(spec)
            for other, ospec in gws:
                if other is gw or not _subset(gw_selector(spec), gw_selector(ospec)):
                    continue
                if mine & self._certs(ospec):
                    names = [f"{gw.namespace}/{gw.name}", f"{other.namespace}/{other.name}"]
                    yield diag(msg.GatewayDuplicateCertificate, gw, names, path="spec.servers")
                    break


class ConflictingGatewayAnalyzer(Analyzer):
    """Gateways on the same workloads must not define the same port with overlapping hosts."""

    name = "gateway.ConflictingGatewayAnalyzer"
    messages = (msg.ConflictingGateways,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        gws = gateways(ctx)
        for gw, spec in gws:
            sel = gw_selector(spec)
            for other, ospec in gws:
                if other is gw:
                    continue
                osel = gw_selector(ospec)
                if not (_subset(sel, osel) or _subset(osel, sel)):
                    continue
                hit = self._conflict(spec, ospec)
                if hit:
                    port, hosts = hit
                    yield diag(msg.ConflictingGateways, gw, f"{other.namespace}/{other.name}",
                               selector_string(sel), str(port), hosts, path="spec.servers")

    @staticmethod
    def _conflict(a: Gateway, b: Gateway) -> tuple[int, list[str]] | None:
        for sa in a.servers or ():
            pa = _port(sa)
            if pa is None:
                continue
            for sb in b.servers or ():
                if _port(sb) != pa:
                    continue
                common = [h for h in sa.hosts or () if any(hosts_match(h, o) for o in sb.hosts or ())]
                if common:
                    return pa, common
        return None
