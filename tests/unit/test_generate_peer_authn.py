"""PeerAuthentication: Istio's precedence and the inbound filter chains of each mode (through the Generator).

Istio's rules matched:
- pilot/pkg/model/authentication.go composePeerAuthentication: no selector = mesh-level in the root namespace
  (istio-system) or namespace-level elsewhere; a selector = workload-level (ignored in the root namespace);
  workload > namespace > mesh; the oldest wins among equals; UNSET inherits; no policy = PERMISSIVE;
  portLevelMtls only on the workload-level policy, an UNSET port inheriting the workload's mode.
- pilot/pkg/networking/core/filterchain_options.go: PERMISSIVE HTTP = [tls + allIstioMtlsALPNs (mTLS),
  raw_buffer]; PERMISSIVE TCP adds a plain-TLS chain; STRICT = [tls (mTLS)]; plaintext otherwise.
- pilot/pkg/security/authn/utils BuildInboundTLS: require_client_certificate, ALPN h2/http1.1 on HTTP
  (istio-peer-exchange, h2, http/1.1 on TCP), TLS 1.2 - 1.3, SupportedCiphers, SDS default + ROOTCA.
- Inbound HCM: forward_client_cert_details APPEND_FORWARD, set_current_client_cert_details subject, dns, uri
  (X-Forwarded-Client-Cert: By=...;Hash=...;Subject="";URI=spiffe://...).
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from sailmesh.generate.peer_authn import workload_policy
from sailmesh.generate.tls import sds_secret
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_mtls import TLS_MODE, httpbin_mesh, peer_authn
from tests.unit.test_generate_support import generated, make_snapshot, resources, service, sidecar

HCM = hcm_pb2.HttpConnectionManager
TlsParams = common_pb2.TlsParameters
ISTIO_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]


def httpbin_proxy(ns: str = "foo", identity: bool = True, **extra: str) -> ProxyView:
    labels = {"app": "httpbin", **extra, **({TLS_MODE: "istio"} if identity else {})}
    ip = "127.0.2.1" if ns == "foo" else "127.0.3.1"
    return sidecar("httpbin-0", ip, ns, app_ports={8000: 41000, 9000: 41001}, **labels)


def inbound(snapshot: MeshSnapshot, proxy: ProxyView | None = None, port: int = 8000) -> listener_pb2.Listener:
    proxy = proxy or httpbin_proxy()
    return generated(snapshot, proxy, LISTENER, listener_pb2.Listener)[f"{proxy.ip}_{port}"]


def mesh(*policies: str) -> MeshSnapshot:
    """httpbin in foo and bar with HTTP 8000 and TCP 9000."""
    svcs = [service("httpbin", ns, ports=[(8000, "HTTP"), (9000, "TCP")]) for ns in ("foo", "bar")]
    return httpbin_mesh(*policies, services=svcs)


def mode_of(listener: listener_pb2.Listener) -> str:
    """The mode the chains implement: STRICT, PERMISSIVE or DISABLE (and checks their shape)."""
    chains = list(listener.filter_chains)
    transports = [(c.filter_chain_match.transport_protocol, list(c.filter_chain_match.application_protocols),
                   c.HasField("transport_socket")) for c in chains]
    if transports == [("tls", [], True)]:
        return "STRICT"
    if transports[:2] == [("tls", ISTIO_ALPNS, True), ("raw_buffer", [], False)]:
        return "PERMISSIVE"
    if transports == [("", [], False)]:
        return "DISABLE"
    raise AssertionError(transports)


def downstream(chain: listener_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    ctx = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    assert chain.transport_socket.typed_config.Unpack(ctx)
    return ctx


def test_default_is_permissive_mtls_and_plaintext_on_one_port() -> None:
    lis = inbound(mesh())
    assert mode_of(lis) == "PERMISSIVE"
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert len(lis.filter_chains) == 2  # HTTP: no plain-TLS chain ("explicitly declared as HTTP")
    ctx = downstream(lis.filter_chains[0])
    assert ctx.require_client_certificate.value
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]  # ALPNHttp, never "istio"
    assert common.tls_params.tls_minimum_protocol_version == TlsParams.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == TlsParams.TLSv1_3
    assert list(common.tls_params.cipher_suites) == [
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"]
    assert list(common.tls_certificate_sds_secret_configs) == [sds_secret("default")]
    cvc = common.combined_validation_context  # the client certificate must chain to the mesh root
    assert cvc.validation_context_sds_secret_config == sds_secret("ROOTCA")
    assert not cvc.default_validation_context.match_typed_subject_alt_names  # any mesh identity (authz decides)
    # both chains run the same HCM, which sets XFCC as Istio does
    for chain in lis.filter_chains:
        h = HCM()
        assert chain.filters[0].typed_config.Unpack(h)
        assert h.forward_client_cert_details == HCM.APPEND_FORWARD
        cc = h.set_current_client_cert_details
        assert cc.subject.value and cc.uri and cc.dns


def test_permissive_tcp_port_also_passes_the_apps_own_tls() -> None:
    lis = inbound(mesh(), port=9000)
    assert mode_of(lis) == "PERMISSIVE"
    third = lis.filter_chains[2]
    assert third.filter_chain_match.transport_protocol == "tls" and not third.filter_chain_match.application_protocols
    assert not third.HasField("transport_socket")
    ctx = downstream(lis.filter_chains[0])
    assert list(ctx.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "h2", "http/1.1"]
    tp = tcp_proxy_pb2.TcpProxy()
    assert lis.filter_chains[1].filters[0].typed_config.Unpack(tp) and tp.cluster == "inbound|9000||"


def test_strict_accepts_only_tls_on_http_and_tcp_ports() -> None:
    snap = mesh(peer_authn("istio-system", "STRICT"))
    for port in (8000, 9000):
        lis = inbound(snap, port=port)
        assert mode_of(lis) == "STRICT"  # a plaintext connection matches no chain: Envoy closes it
        assert downstream(lis.filter_chains[0]).require_client_certificate.value


def test_disable_is_plaintext_only() -> None:
    lis = inbound(mesh(peer_authn("foo", "DISABLE")))
    assert mode_of(lis) == "DISABLE" and not lis.listener_filters


def test_namespace_beats_mesh_and_workload_beats_namespace() -> None:
    assert mode_of(inbound(mesh(peer_authn("istio-system", "STRICT"), peer_authn("foo", "PERMISSIVE")))) == \
        "PERMISSIVE"
    assert mode_of(inbound(mesh(peer_authn("istio-system", "PERMISSIVE"), peer_authn("foo", "STRICT")))) == "STRICT"
    snap = mesh(peer_authn("foo", "STRICT"), peer_authn("foo", "DISABLE", "overwrite-example", "app: httpbin"))
    assert mode_of(inbound(snap)) == "DISABLE"  # the task's overwrite-example
    # another namespace's policies do not apply
    assert mode_of(inbound(mesh(peer_authn("bar", "STRICT")))) == "PERMISSIVE"
    assert mode_of(inbound(mesh(peer_authn("bar", "STRICT")), httpbin_proxy("bar"))) == "STRICT"


def test_oldest_wins_among_equals() -> None:
    older = peer_authn("foo", "STRICT", "b-old", ts="2024-01-01T00:00:00Z")
    newer = peer_authn("foo", "DISABLE", "a-new", ts="2024-06-01T00:00:00Z")
    assert mode_of(inbound(mesh(newer, older))) == "STRICT"
    w_old = peer_authn("foo", "DISABLE", "w-old", "app: httpbin", ts="2024-01-01T00:00:00Z")
    w_new = peer_authn("foo", "STRICT", "w-new", "app: httpbin", ts="2024-06-01T00:00:00Z")
    assert mode_of(inbound(mesh(w_new, w_old))) == "DISABLE"


def test_unset_inherits_from_the_wider_scope() -> None:
    snap = mesh(peer_authn("istio-system", "STRICT"), peer_authn("foo", "UNSET"),
                peer_authn("foo", "UNSET", "w", "app: httpbin"))
    assert mode_of(inbound(snap)) == "STRICT"
    no_mtls = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: w, namespace: foo}\n"
               "spec:\n  selector: {matchLabels: {app: httpbin}}\n")
    assert mode_of(inbound(mesh(peer_authn("foo", "STRICT"), no_mtls))) == "STRICT"


def test_selector_in_root_namespace_is_ignored_and_mesh_policy_applies_everywhere() -> None:
    snap = mesh(peer_authn("istio-system", "STRICT", "sel", "app: httpbin"))
    assert mode_of(inbound(snap)) == "PERMISSIVE"
    assert mode_of(inbound(mesh(peer_authn("istio-system", "STRICT")), httpbin_proxy("bar"))) == "STRICT"


def port_policy(ports: str, mode: str = "STRICT", selector: bool = True) -> str:
    sel = "  selector: {matchLabels: {app: httpbin}}\n" if selector else ""
    return ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\n"
            f"spec:\n{sel}  mtls: {{mode: {mode}}}\n  portLevelMtls:\n{ports}")


def test_port_level_mtls_on_the_workload_port() -> None:
    """The task's bar/httpbin policy: STRICT, with the workload port DISABLE."""
    snap = mesh(port_policy("    8000: {mode: DISABLE}\n"))
    assert mode_of(inbound(snap, port=8000)) == "DISABLE"
    assert mode_of(inbound(snap, port=9000)) == "STRICT"
    unset = mesh(peer_authn("foo", "STRICT"), port_policy("    9000: {mode: UNSET}\n", mode="DISABLE"))
    assert mode_of(inbound(unset, port=9000)) == "DISABLE"  # UNSET port: the workload's resolved mode
    assert workload_policy(unset, "foo", {"app": "httpbin"}).per_port == {9000: "DISABLE"}


def test_port_level_mtls_needs_a_selector() -> None:
    snap = mesh(port_policy("    8000: {mode: DISABLE}\n", selector=False))
    assert mode_of(inbound(snap, port=8000)) == "STRICT"  # namespace-level: only its mtls counts


def test_sidecar_without_identity_stays_plaintext_and_strict_refuses_everything() -> None:
    plain = inbound(mesh(), httpbin_proxy(identity=False))
    assert mode_of(plain) == "DISABLE" and not plain.listener_filters  # as before mTLS: no SDS to reference
    strict = inbound(mesh(peer_authn("foo", "STRICT")), httpbin_proxy(identity=False))
    (chain,) = strict.filter_chains
    assert chain.filter_chain_match.transport_protocol == "tls" and not chain.HasField("transport_socket")
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[0].typed_config.Unpack(tp) and tp.cluster == "BlackHoleCluster"


def test_workload_policy_names_its_sources() -> None:
    snap = make_snapshot(resources(peer_authn("istio-system", "STRICT"), peer_authn("foo", "UNSET"),
                                   peer_authn("foo", "DISABLE", "w", "app: httpbin")))
    got = workload_policy(snap, "foo", {"app": "httpbin"})
    assert got.mode == "DISABLE" and got.sources == ("istio-system/default", "foo/w")
    assert workload_policy(snap, "foo", {"app": "sleep"}).mode == "STRICT"
