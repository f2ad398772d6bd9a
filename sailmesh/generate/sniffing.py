"""Istio's protocol sniffing for a captured sidecar: a service port whose protocol is not declared (no `http-`/`tcp-`
name prefix, no appProtocol, not a well-known server-first port: registry/protocol.py's UNKNOWN) is served by one
listener that tells HTTP from TCP per connection, as Istio's listener builder does (ListenerProtocolAuto):

- listener filters `envoy.filters.listener.tls_inspector` and `envoy.filters.listener.http_inspector` (the latter
  sets the connection's application protocol to `http/1.0`, `http/1.1` or `h2c` when the first bytes are HTTP);
  `listener_filters_timeout` is the mesh's `protocolDetectionTimeout`, 0s by default (no timeout: a server-first
  protocol on an undeclared port waits, as Istio documents; declare such ports);
- outbound (listener.go buildSidecarOutboundListener, Auto): the service's TCP chain as the listener's default
  filter chain, and HTTP chains matched by `application_protocols` http/1.1 and h2c (Istio's plaintextHTTPALPNs
  without HTTP/1.0, its default) and `transport_protocol: raw_buffer`, an HCM routing by Host. Istio names that
  route config `host:port` for a listener bound to the service's address (the service's virtual host alone, its
  domains `*`, no catch-all: routes.sniffed_service_routes) and `PORT` on the wildcard (every HTTP or sniffed
  service of the port, then allow_any/block_all); both over RDS, as Istio's;
- the client's ALPN towards the server (Istio's `istio.alpn` HTTP filter, on every outbound HCM, sets the
  upstream ALPN from the protocol the route's cluster speaks for the request: `istio-http/1.0|1.1` or `istio-h2`,
  then `istio`): upstream Envoy has no `istio.alpn`, so each sniffed HTTP chain gets an HTTP filter of that name
  that is Envoy's `set_filter_state` writing the well-known `envoy.network.application_protocols` (the upstream
  ALPN override): `istio-http/1.1,istio` on the http/1.1 chain, `istio-h2,istio` on the h2c chain (the sniffed
  port's cluster speaks the client's protocol: `use_downstream_protocol_config`, clusters.py). Mesh mTLS to a
  sniffed port then lands on the server's HTTP chain, as between Istio's sidecars;
- inbound (filterchain_options.go getFilterChainMatchOptions, Auto): PERMISSIVE: mTLS + `istio-http/*` ALPN ->
  HTTP, plaintext + http/1.1|h2c -> HTTP, mTLS + `istio-peer-exchange`|`istio` -> TCP, plaintext -> TCP, other TLS
  -> TCP (the app's own TLS); STRICT: mTLS + `istio-http/*` -> HTTP, mTLS -> TCP; DISABLE: plaintext HTTP ALPNs ->
  HTTP, plaintext -> TCP. A client's TCP chain offers `istio-peer-exchange`, `istio` (the cluster's ALPN) and
  lands on the server's TCP chain.

Pure: protobufs in, protobufs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api.meshconfig import MeshMTLS
from sailmesh.generate.alpn import MTLS_HTTP2_ALPN, MTLS_HTTP11_ALPN, alpn_override
from sailmesh.generate.common import pack
from sailmesh.generate.peer_authn import DISABLE, STRICT
from sailmesh.generate.tls import (
    ALPN_IN_MESH,
    RAW_BUFFER_TRANSPORT,
    TLS_TRANSPORT,
    istio_mutual_downstream,
    tls_inspector,
    transport_socket,
)
from sailmesh.generate.tls import inbound_chains as tls_inbound_chains

HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
HCM_NAME = "envoy.filters.network.http_connection_manager"
PLAINTEXT_HTTP_ALPNS = ("http/1.1", "h2c")  # Istio's plaintextHTTPALPNs (HTTP10 off, its default)
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")  # Istio's mtlsHTTPALPNs
MTLS_TCP_ALPNS = ALPN_IN_MESH  # Istio's mtlsTCPWithMxcALPNs: istio-peer-exchange, istio
# the sniffed HTTP chains: (the protocol the http_inspector found, the ALPN offered upstream for it)
HTTP_CHAINS = (("http/1.1", MTLS_HTTP11_ALPN), ("h2c", MTLS_HTTP2_ALPN))


def http_inspector(only: Iterable[int] = (), skip: Iterable[int] = ()) -> lc.ListenerFilter:
    """The http_inspector listener filter; `only`: run it only for connections to these destination ports, `skip`:
    not for these (`filter_disabled`: Istio's virtualInbound inspects only the ports that sniff)."""
    f = lc.ListenerFilter(name=HTTP_INSPECTOR, typed_config=pack(http_inspector_pb2.HttpInspector()))
    ports = sorted(set(only) or set(skip))
    if ports:
        _ports_predicate(f.filter_disabled.not_match if set(only) else f.filter_disabled, ports)
    return f


def _ports_predicate(pred: lc.ListenerFilterChainMatchPredicate, ports: list[int]) -> None:
    """`pred` made "the destination port is one of `ports`" (a match set needs two rules or more)."""
    rules = [pred] if len(ports) == 1 else [pred.or_match.rules.add() for _ in ports]
    for rule, p in zip(rules, ports, strict=True):
        rule.destination_port_range.start = p
        rule.destination_port_range.end = p + 1


def needs_http_inspector(chains: Iterable[lc.FilterChain]) -> bool:
    """Whether a chain is matched on an application protocol only the http_inspector sets (plaintext HTTP)."""
    return any(set(fc.filter_chain_match.application_protocols) & set(PLAINTEXT_HTTP_ALPNS) for fc in chains)


def with_alpn_override(http: hcm_pb2.HttpConnectionManager, alpns: Sequence[str]) -> hcm_pb2.HttpConnectionManager:
    """A copy of `http` with `alpn_override(alpns)` just before its router (the last filter)."""
    out = hcm_pb2.HttpConnectionManager()
    out.CopyFrom(http)
    filters = list(out.http_filters)
    del out.http_filters[:]
    out.http_filters.extend([*filters[:-1], alpn_override(alpns), *filters[-1:]])
    return out


def outbound_listener(listener: listener_pb2.Listener, http: hcm_pb2.HttpConnectionManager) -> listener_pb2.Listener:
    """`listener` (its one chain: the service's TCP chain) made Istio's sniffed outbound listener: the TCP chain as
    the default filter chain, an HTTP chain (`http`) for plaintext HTTP/1.1 and one for h2c, each offering its
    protocol's Istio ALPN upstream, both inspectors."""
    tcp = listener.filter_chains[0]
    listener.default_filter_chain.CopyFrom(tcp)
    del listener.filter_chains[:]
    for inspected, alpns in HTTP_CHAINS:
        listener.filter_chains.append(lc.FilterChain(
            filter_chain_match=lc.FilterChainMatch(application_protocols=[inspected],
                                                   transport_protocol=RAW_BUFFER_TRANSPORT),
            filters=[lc.Filter(name=HCM_NAME, typed_config=pack(with_alpn_override(http, alpns)))]))
    listener.listener_filters.extend([tls_inspector(), http_inspector()])
    listener.listener_filters_timeout.FromSeconds(0)  # the mesh's protocolDetectionTimeout, 0s by default
    return listener


# (transport protocol, ALPN values, HTTP chain, terminate mTLS) per chain: Istio's Auto FilterChainMatchOptions
_Spec = tuple[str, tuple[str, ...], bool, bool]
_PERMISSIVE: tuple[_Spec, ...] = (
    (TLS_TRANSPORT, MTLS_HTTP_ALPNS, True, True),
    (RAW_BUFFER_TRANSPORT, PLAINTEXT_HTTP_ALPNS, True, False),
    (TLS_TRANSPORT, MTLS_TCP_ALPNS, False, True),
    (RAW_BUFFER_TRANSPORT, (), False, False),
    (TLS_TRANSPORT, (), False, False),
)
_STRICT: tuple[_Spec, ...] = ((TLS_TRANSPORT, MTLS_HTTP_ALPNS, True, True), (TLS_TRANSPORT, (), False, True))
_PLAINTEXT: tuple[_Spec, ...] = ((RAW_BUFFER_TRANSPORT, PLAINTEXT_HTTP_ALPNS, True, False),
                                 (RAW_BUFFER_TRANSPORT, (), False, False))


def inbound_chains(mode: str, has_identity: bool, http: lc.Filter, tcp: lc.Filter,
                   mtls: MeshMTLS = MeshMTLS(), mx: bool = True) -> list[lc.FilterChain]:
    """The filter chains of a sniffed inbound port under a PeerAuthentication mode (Istio's Auto options): `http`
    the HCM, `tcp` the tcp_proxy (the caller puts the TCP authorization filters before it). Without a mesh
    identity: plaintext, except that STRICT refuses (as tls.inbound_chains)."""
    if not has_identity and mode == STRICT:
        return tls_inbound_chains(mode, False, False, tcp, mtls, mx)  # the one refusing chain
    specs = _PLAINTEXT if not has_identity or mode == DISABLE else _STRICT if mode == STRICT else _PERMISSIVE
    out = []
    for transport, alpns, is_http, terminate in specs:
        fc = lc.FilterChain(filter_chain_match=lc.FilterChainMatch(transport_protocol=transport,
                                                                   application_protocols=alpns),
                            filters=[http if is_http else tcp])
        if terminate:
            fc.transport_socket.CopyFrom(transport_socket(istio_mutual_downstream(is_http, mtls, mx)))
        out.append(fc)
    return out
