"""Istio's `istio.alpn` (the upstream ALPN override) as Envoy's set_filter_state, and which ports sniff protocols.

Upstream Envoy has no `istio.alpn`; the filter of that name here is Envoy's `set_filter_state` writing the well-known
`envoy.network.application_protocols` (read only by TLS upstreams), so a request's mesh mTLS connection offers
`istio-http/1.1` or `istio-h2` (then `istio`) and a server whose port sniffs the protocol serves it on its HTTP chain.
Captured sidecars' sniffed HTTP chains carry it enabled (sniffing.py); gateways carry it disabled and enable it per
route for routes to such ports (httproute.enable_alpn_override).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2 as sfs_value
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.generate.common import pack

SNIFFED = frozenset({"UNKNOWN", ""})  # Istio's UnsupportedProtocol: the proxy detects the protocol
# what Istio's istio.alpn filter offers upstream per protocol (mtlsHTTP11ALPN, mtlsHTTP2ALPN)
MTLS_HTTP11_ALPN = ("istio-http/1.1", "istio")
MTLS_HTTP2_ALPN = ("istio-h2", "istio")
ALPN_FILTER = "istio.alpn"  # Istio's filter name (EnvoyFilter patches name it); here Envoy's set_filter_state
APPLICATION_PROTOCOLS = "envoy.network.application_protocols"  # Envoy's well-known upstream ALPN override


def is_sniffed(protocol: str) -> bool:
    """Whether a port's protocol is detected by the proxy (not declared)."""
    return protocol.upper() in SNIFFED


def alpn_override(alpns: Sequence[str], disabled: bool = False) -> hcm_pb2.HttpFilter:
    """Istio's `istio.alpn` for one upstream protocol: the request's upstream connection offers `alpns`;
    `disabled`: off unless the request's route enables it."""
    value = sfs_value.FilterStateValue(object_key=APPLICATION_PROTOCOLS)
    value.format_string.text_format_source.inline_string = ",".join(alpns)
    return hcm_pb2.HttpFilter(name=ALPN_FILTER, typed_config=pack(sfs.Config(on_request_headers=[value])),
                              disabled=disabled)
