"""Istio's `proxyHeaders` (the mesh config's defaultConfig) as Envoy settings per listener class.

Istio's pilot/pkg/networking/util/proxy_headers.go (GetProxyHeadersFromProxyConfig), followed field by field:
- `server`: inbound and gateway HCMs answer `server: istio-envoy`, the sidecar's outbound HCMs Envoy's own `envoy`
  (Istio keeps that difference "for backwards compatibility"); `value` replaces the name on every class, `disabled`
  leaves the upstream's header as it is (PASS_THROUGH, no name);
- `requestId.disabled`: no x-request-id is generated (one already there is kept);
- `attemptCount.disabled`: no `x-envoy-attempt-count` on outbound and gateway virtual hosts;
- `envoyDebugHeaders.disabled`: the router filter suppresses its `x-envoy-*` headers (every class);
- `xForwardedPort.enabled`: every HCM appends `x-forwarded-port` (Istio's buildHTTPConnectionManager);
- `forwardedClientCert` / `setCurrentClientCertDetails`: the inbound HCM's XFCC mode (APPEND_FORWARD unless set;
  Istio's enum is Envoy's plus one) and its fields (subject, URI, DNS unless set false; cert, chain if set true).
Istio takes these from the proxy's own ProxyConfig when its node metadata carries one, else the mesh config's
defaultConfig; sailmesh reads the mesh config's (a pod's `proxy.istio.io/config` proxyHeaders are reported as not
acted on).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api.meshconfig import FORWARD_CLIENT_CERT, MeshConfig, ProxyHeaders
from sailmesh.generate import names

HCM = hcm_pb2.HttpConnectionManager


class ListenerClass(Enum):
    """Istio's istionetworking.ListenerClass, the three a sidecar or gateway HCM belongs to."""

    SIDECAR_INBOUND = "inbound"
    SIDECAR_OUTBOUND = "outbound"
    GATEWAY = "gateway"


@dataclass(frozen=True)
class HeaderSettings:
    """What one listener class's HCM, router and virtual hosts set (Istio's util.ProxyHeaders)."""

    server_name: str  # "" leaves Envoy's default name ("envoy")
    server_transformation: int  # HCM.OVERWRITE or HCM.PASS_THROUGH
    forward_client_cert: int  # an HCM.ForwardClientCertDetails value (inbound only)
    cert_subject: bool
    cert_uri: bool
    cert_dns: bool
    cert_cert: bool
    cert_chain: bool
    generate_request_id: bool
    attempt_count: bool
    suppress_debug_headers: bool
    x_forwarded_port: bool = False


def _on(flag: bool | None, default: bool) -> bool:
    return default if flag is None else flag


def _forward_client_cert(value: str | int | None) -> int:
    """Istio's MeshConfigToEnvoyForwardClientCertDetails (Envoy's value is Istio's minus one); UNDEFINED keeps the
    default, APPEND_FORWARD."""
    index = FORWARD_CLIENT_CERT.index(value) if isinstance(value, str) else (value or 0)
    return HCM.APPEND_FORWARD if index == 0 else index - 1


def for_class(mesh: MeshConfig, cls: ListenerClass) -> HeaderSettings:
    """The settings of `cls` from the mesh config's defaultConfig.proxyHeaders (Istio's defaults where unset)."""
    ph: ProxyHeaders = mesh.default_config.proxy_headers or ProxyHeaders()
    name = "" if cls is ListenerClass.SIDECAR_OUTBOUND else names.ISTIO_SERVER_NAME
    transformation = HCM.OVERWRITE
    if ph.server is not None:
        if ph.server.disabled:
            name, transformation = "", HCM.PASS_THROUGH
        elif ph.server.value:
            name = ph.server.value
    details = ph.set_current_client_cert_details
    return HeaderSettings(
        server_name=name,
        server_transformation=transformation,
        forward_client_cert=_forward_client_cert(ph.forwarded_client_cert),
        cert_subject=_on(details.subject if details else None, True),
        cert_uri=_on(details.uri if details else None, True),
        cert_dns=_on(details.dns if details else None, True),
        cert_cert=_on(details.cert if details else None, False),
        cert_chain=_on(details.chain if details else None, False),
        generate_request_id=not (ph.request_id is not None and ph.request_id.disabled),
        attempt_count=not (ph.attempt_count is not None and ph.attempt_count.disabled),
        suppress_debug_headers=bool(ph.envoy_debug_headers is not None and ph.envoy_debug_headers.disabled),
        x_forwarded_port=bool(ph.x_forwarded_port is not None and ph.x_forwarded_port.enabled),
    )


def attempt_count(mesh: MeshConfig) -> bool:
    """Whether outbound and gateway virtual hosts add `x-envoy-attempt-count` (Istio: on unless disabled)."""
    return for_class(mesh, ListenerClass.SIDECAR_OUTBOUND).attempt_count


def apply(h: hcm_pb2.HttpConnectionManager, mesh: MeshConfig, cls: ListenerClass) -> None:
    """Set an HCM's server name, server header transformation, request IDs, x-forwarded-port and XFCC as Istio's
    listener builders do for `cls`. XFCC: inbound from proxyHeaders; gateways SANITIZE_SET with subject, cert, DNS
    and URI (Istio's buildGatewayConnectionManager: "Gateways do not use ProxyHeaders for XFCC"); outbound Envoy's
    default, SANITIZE."""
    settings = for_class(mesh, cls)
    if settings.server_name:
        h.server_name = settings.server_name
    else:
        h.ClearField("server_name")
    h.server_header_transformation = settings.server_transformation
    h.generate_request_id.value = settings.generate_request_id
    h.append_x_forwarded_port = settings.x_forwarded_port
    d = h.set_current_client_cert_details
    if cls is ListenerClass.SIDECAR_INBOUND:
        h.forward_client_cert_details = settings.forward_client_cert
        d.subject.value = settings.cert_subject
        d.uri, d.dns, d.cert, d.chain = settings.cert_uri, settings.cert_dns, settings.cert_cert, settings.cert_chain
    elif cls is ListenerClass.GATEWAY:
        h.forward_client_cert_details = HCM.SANITIZE_SET
        d.subject.value = True
        d.cert = d.dns = d.uri = True


__all__ = ["HeaderSettings", "ListenerClass", "apply", "attempt_count", "for_class"]
