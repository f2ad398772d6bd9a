"""Sidecar `ingress` listeners (Istio: when a Sidecar declares them, the proxy's inbound listeners are exactly those,
forwarding to each one's defaultEndpoint); what is not acted on in them is reported."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from sailmesh.generate import enforcement
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo, generated, resources, sidecar

INGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 7000, protocol: HTTP, name: http-alt}
    defaultEndpoint: 0.0.0.0:9080
  - port: {number: 7001, protocol: TCP, name: tcp-local}
    defaultEndpoint: 127.0.0.1:5555
  - port: {number: 7002, protocol: HTTP, name: http-default}
"""


def reviews():  # type: ignore[no-untyped-def]
    return sidecar("reviews-v1-0", "127.0.1.3", app_ports={9080: 41000}, app="reviews", version="v1")


def endpoint(c: cluster_pb2.Cluster) -> tuple[str, int]:
    sa = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    return sa.address, sa.port_value


def test_ingress_listeners_replace_the_workload_ports() -> None:
    snap = bookinfo(INGRESS)
    ls = generated(snap, reviews(), LISTENER, listener_pb2.Listener)
    inbound = sorted(n for n in ls if n.startswith("127.0.1.3_"))
    assert inbound == ["127.0.1.3_7000", "127.0.1.3_7001", "127.0.1.3_7002"]  # 9080 is no longer served
    cs = generated(snap, reviews(), CLUSTER, cluster_pb2.Cluster)
    assert endpoint(cs["inbound|7000||"]) == ("127.0.1.3", 41000)  # 0.0.0.0:9080 = the app's port 9080
    assert endpoint(cs["inbound|7001||"]) == ("127.0.0.1", 5555)  # a loopback endpoint as written
    assert endpoint(cs["inbound|7002||"]) == ("127.0.1.3", 7002)  # unset: the listener's own port
    assert "inbound|9080||" not in cs
    assert ls["127.0.1.3_7001"].filter_chains[-1].filters[-1].name == "envoy.filters.network.tcp_proxy"


def test_other_workloads_keep_their_ports() -> None:
    ls = generated(bookinfo(INGRESS), sidecar(), LISTENER, listener_pb2.Listener)
    assert "127.0.1.1_9080" in ls


def test_ingress_is_enforced_but_unix_endpoints_are_reported() -> None:
    assert enforcement.not_enforced(resources(INGRESS)[0]) == []
    partial = INGRESS.replace("    defaultEndpoint: 127.0.0.1:5555\n",
                              "    defaultEndpoint: unix:///var/run/app.sock\n    bind: 127.0.0.1\n")
    assert enforcement.not_enforced(resources(partial)[0]) == [
        "Sidecar default/reviews-ingress: accepted, not enforced: "
        "spec.ingress[1].defaultEndpoint: unix:// (no listener is built)"]  # bind: test_ingress_bind_moves_the_listener


TLS_INGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 0.0.0.0:9080
    tls: {mode: MUTUAL, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem,
          caCertificates: /etc/certs/ca.pem, subjectAltNames: [client.example.com]}
  - port: {number: 7001, protocol: TCP, name: tcp}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:5555
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
"""


def _tls(chain):  # type: ignore[no-untyped-def]
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    ctx = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(ctx)
    return ctx


def test_ingress_tls_terminates_with_the_files_it_names() -> None:
    """Istio's Sidecar ingress `tls` (SIMPLE and MUTUAL): the port's only filter chain terminates TLS with the
    Sidecar's certificate (PeerAuthentication's mTLS chains give way), MUTUAL requires a client certificate."""
    ls = generated(bookinfo(TLS_INGRESS), reviews(), LISTENER, listener_pb2.Listener)
    (chain,) = ls["127.0.1.3_9080"].filter_chains
    assert chain.filter_chain_match.transport_protocol == "tls"
    assert [f.name for f in ls["127.0.1.3_9080"].listener_filters] == ["envoy.filters.listener.tls_inspector"]
    ctx = _tls(chain)
    assert ctx.require_client_certificate.value
    cert = ctx.common_tls_context.tls_certificates[0]
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/etc/certs/cert.pem", "/etc/certs/key.pem")
    vc = ctx.common_tls_context.validation_context
    assert vc.trusted_ca.filename == "/etc/certs/ca.pem"
    assert [m.matcher.exact for m in vc.match_typed_subject_alt_names][:1] == ["client.example.com"]
    simple = _tls(ls["127.0.0.1_7001"].filter_chains[0])
    assert not simple.require_client_certificate.value


def test_ingress_bind_moves_the_listener() -> None:
    ls = generated(bookinfo(TLS_INGRESS), reviews(), LISTENER, listener_pb2.Listener)
    assert "127.0.0.1_7001" in ls and "127.0.1.3_7001" not in ls
    assert ls["127.0.0.1_7001"].address.socket_address.address == "127.0.0.1"
    assert enforcement.not_enforced(resources(TLS_INGRESS)[0]) == []
    bad = TLS_INGRESS.replace("mode: SIMPLE, serverCertificate", "mode: ISTIO_MUTUAL, serverCertificate")
    assert enforcement.not_enforced(resources(bad)[0]) == [
        "Sidecar default/reviews-ingress: accepted, not enforced: "
        "spec.ingress[1].tls.mode: ISTIO_MUTUAL (SIMPLE and MUTUAL only, as Istio)"]
