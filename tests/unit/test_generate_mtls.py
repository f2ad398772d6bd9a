"""Mutual TLS as Istio generates it: auto mTLS on outbound clusters, DestinationRule tls modes, endpoint tlsMode,
and the client TLS context (through the production Generator).

Istio sources matched (pilot/pkg/networking/core/cluster_tls.go, pilot/pkg/model/push_context.go):
- buildUpstreamTLSSettings: a DR `tls` decides; without one auto mTLS applies unless the service is mesh-external,
  enableAutoMtls is off or the service's namespace/mesh PeerAuthentication is DISABLE (BestEffortInferServiceMTLSMode).
- applyUpstreamTLSSettings: auto-detected mTLS becomes transport_socket_matches `tlsMode-istio` ({tlsMode: istio})
  then `tlsMode-disabled` (raw_buffer); a user-supplied ISTIO_MUTUAL is the cluster's transport_socket.
- ISTIO_MUTUAL: defaultUpstreamCommonTLSContext (TLS 1.2 - 1.3), SDS `default` + combined validation with `ROOTCA`,
  SANs = the DR's subjectAltNames else the service accounts, SNI = the DR's else outbound_.<port>_.<subset>_.<host>,
  ALPN istio-peer-exchange, istio (+ h2 for HTTP/2 clusters).
"""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from sailmesh.api import meshconfig
from sailmesh.generate.generator import Generator
from sailmesh.generate.tls import sds_secret
from sailmesh.registry.model import Workload
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service
from sailmesh.xds.types import CLUSTER, ENDPOINT
from tests.unit.test_generate_support import (
    gateway_proxy,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
    unpacked,
)

C = cluster_pb2.Cluster
TLS_MODE = "security.istio.io/tlsMode"
HTTPBIN_FOO = "httpbin.foo.svc.cluster.local"
HTTPBIN_CLUSTER = f"outbound|8000||{HTTPBIN_FOO}"
TlsParams = common_pb2.TlsParameters


def pod(name: str, ip: str, ns: str, app: str, sa: str, sidecar_: bool = True, **labels: str) -> Workload:
    lab = {"app": app, **labels}
    if sidecar_:
        lab[TLS_MODE] = "istio"  # what sidecar injection adds to the pod
    return Workload(name=name, namespace=ns, address=ip, labels=lab, service_account=sa)


def httpbin_mesh(*config: str, services: list[Service] | None = None,
                 workloads: list[Workload] | None = None) -> MeshSnapshot:
    """Istio's security-task set-up: httpbin in foo (sidecar) and legacy (none), sleep in foo."""
    svcs = services or [service("httpbin", "foo", ports=[(8000, "HTTP")]),
                        service("httpbin", "legacy", ports=[(8000, "HTTP")]),
                        service("sleep", "foo", ports=[(80, "HTTP")])]
    wls = workloads or [pod("httpbin-0", "127.0.2.1", "foo", "httpbin", "httpbin"),
                        pod("httpbin-0", "127.0.4.1", "legacy", "httpbin", "httpbin", sidecar_=False),
                        pod("sleep-0", "127.0.2.2", "foo", "sleep", "sleep")]
    return make_snapshot(resources(*config) if config else (), svcs, wls)


def sleep_proxy(identity: bool = True, ns: str = "foo") -> ProxyView:
    labels = {"app": "sleep", **({TLS_MODE: "istio"} if identity else {})}
    return sidecar("sleep-0", "127.0.2.2", ns, app_ports={80: 41000}, **labels)


def clusters(snapshot: MeshSnapshot, proxy: ProxyView | None = None) -> dict[str, C]:
    return generated(snapshot, proxy or sleep_proxy(), CLUSTER, C)


def upstream(ts: object) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    assert ts.name == "envoy.transport_sockets.tls"  # type: ignore[attr-defined]
    assert ts.typed_config.Unpack(ctx)  # type: ignore[attr-defined]
    return ctx


def sans(ctx: tls_pb2.UpstreamTlsContext) -> list[str]:
    vc = ctx.common_tls_context.combined_validation_context.default_validation_context
    return [m.matcher.exact for m in vc.match_typed_subject_alt_names]


def test_sds_secret_is_istios_form() -> None:
    """The contract's SdsSecretConfig: Envoy gRPC to `sds-grpc`, V3; Istio adds node-on-first-message and no
    initial fetch timeout (pilot/pkg/model ConstructSdsSecretConfig for default/ROOTCA)."""
    s = sds_secret("default")
    assert s.name == "default"
    src = s.sds_config.api_config_source
    assert src.api_type == src.GRPC and src.transport_api_version == 2  # V3
    assert [g.envoy_grpc.cluster_name for g in src.grpc_services] == ["sds-grpc"]
    assert src.set_node_on_first_message_only
    assert s.sds_config.resource_api_version == 2
    assert s.sds_config.HasField("initial_fetch_timeout") and s.sds_config.initial_fetch_timeout.seconds == 0


def test_auto_mtls_without_destination_rule() -> None:
    """No DR: endpoints labelled tlsMode istio get Istio mTLS, the others plaintext (transport_socket_matches)."""
    c = clusters(httpbin_mesh())[HTTPBIN_CLUSTER]
    assert not c.HasField("transport_socket")
    assert [m.name for m in c.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]
    istio, default = c.transport_socket_matches
    assert dict(istio.match) == {"tlsMode": "istio"}
    assert dict(default.match) == {} and default.transport_socket.name == "envoy.transport_sockets.raw_buffer"
    ctx = upstream(istio.transport_socket)
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["istio-peer-exchange", "istio"]  # ALPNInMeshWithMxc
    assert common.tls_params.tls_minimum_protocol_version == TlsParams.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == TlsParams.TLSv1_3  # TLS 1.3 between our proxies
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    cvc = common.combined_validation_context
    assert cvc.validation_context_sds_secret_config.name == "ROOTCA"
    assert cvc.validation_context_sds_secret_config == sds_secret("ROOTCA")
    # the client verifies the server's service account (PushContext.ServiceAccounts)
    assert sans(ctx) == ["spiffe://cluster.local/ns/foo/sa/httpbin"]
    assert all(m.san_type == common_pb2.SubjectAltNameMatcher.URI
               for m in cvc.default_validation_context.match_typed_subject_alt_names)
    assert ctx.sni == f"outbound_.8000_._.{HTTPBIN_FOO}"  # BuildDNSSrvSubsetKey


def test_auto_mtls_sans_list_every_service_account_and_trust_domain() -> None:
    wls = [pod("httpbin-0", "127.0.2.1", "foo", "httpbin", "httpbin"),
           pod("httpbin-v2-0", "127.0.2.3", "foo", "httpbin", "httpbin-v2")]
    snap = httpbin_mesh(workloads=wls)
    snap = dataclasses.replace(snap, mesh=MeshDefaults(trust_domain="example.org"))
    ctx = upstream(clusters(snap)[HTTPBIN_CLUSTER].transport_socket_matches[0].transport_socket)
    assert sans(ctx) == ["spiffe://example.org/ns/foo/sa/httpbin", "spiffe://example.org/ns/foo/sa/httpbin-v2"]


def test_http2_clusters_offer_h2_in_mesh_alpn() -> None:
    snap = httpbin_mesh(services=[service("httpbin", "foo", ports=[(8000, "GRPC")])])
    ctx = upstream(clusters(snap)[HTTPBIN_CLUSTER].transport_socket_matches[0].transport_socket)
    assert list(ctx.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "istio", "h2"]  # ALPNInMeshH2WithMxc


def test_tcp_ports_and_subsets_get_auto_mtls_with_their_sni() -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: foo}
spec:
  host: httpbin
  subsets: [{name: v1, labels: {app: httpbin}}]
"""
    snap = httpbin_mesh(dr, services=[service("httpbin", "foo", ports=[(8000, "HTTP"), (9000, "TCP")])])
    got = clusters(snap)
    for name, sni in ((f"outbound|9000||{HTTPBIN_FOO}", f"outbound_.9000_._.{HTTPBIN_FOO}"),
                      (f"outbound|8000|v1|{HTTPBIN_FOO}", f"outbound_.8000_.v1_.{HTTPBIN_FOO}")):
        assert upstream(got[name].transport_socket_matches[0].transport_socket).sni == sni


def test_no_auto_mtls_from_a_proxy_without_mesh_identity() -> None:
    """A proxy without a certificate (no tlsMode label, no SDS) keeps plaintext clusters (as before mTLS)."""
    c = clusters(httpbin_mesh(), sleep_proxy(identity=False))[HTTPBIN_CLUSTER]
    assert not c.transport_socket_matches and not c.HasField("transport_socket")


def test_no_auto_mtls_to_mesh_external_services() -> None:
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: foo}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"""
    ext = Service(hostname="api.example.com", name="api.example.com", namespace="foo",
                  ports=service("x", ports=[(80, "HTTP")]).ports, resolution="DNS", mesh_external=True)
    snap = httpbin_mesh(se, services=[service("httpbin", "foo", ports=[(8000, "HTTP")]), ext])
    c = clusters(snap)["outbound|80||api.example.com"]
    assert not c.transport_socket_matches and not c.HasField("transport_socket")


def test_enable_auto_mtls_false_turns_it_off() -> None:
    off = meshconfig.from_mapping({"enableAutoMtls": False})
    snap = dataclasses.replace(httpbin_mesh(), mesh_config=off)
    assert not clusters(snap)[HTTPBIN_CLUSTER].transport_socket_matches
    snap_on = dataclasses.replace(httpbin_mesh(), mesh_config=meshconfig.from_mapping({}))
    assert clusters(snap_on)[HTTPBIN_CLUSTER].transport_socket_matches


def peer_authn(ns: str, mode: str, name: str = "default", selector: str = "", ts: str = "") -> str:
    meta = f"{{name: {name}, namespace: {ns}" + (f", creationTimestamp: '{ts}'" if ts else "") + "}"
    sel = f"  selector: {{matchLabels: {{{selector}}}}}\n" if selector else ""
    return (f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {meta}\nspec:\n{sel}"
            f"  mtls: {{mode: {mode}}}\n")


def test_namespace_or_mesh_disable_turns_auto_mtls_off_but_workload_disable_does_not() -> None:
    """BestEffortInferServiceMTLSMode reads only namespace- and mesh-level PeerAuthentication."""
    for policy in (peer_authn("foo", "DISABLE"), peer_authn("istio-system", "DISABLE")):
        assert not clusters(httpbin_mesh(policy))[HTTPBIN_CLUSTER].transport_socket_matches, policy
    # namespace PERMISSIVE over mesh DISABLE: on again
    both = httpbin_mesh(peer_authn("istio-system", "DISABLE"), peer_authn("foo", "PERMISSIVE"))
    assert clusters(both)[HTTPBIN_CLUSTER].transport_socket_matches
    workload = httpbin_mesh(peer_authn("foo", "DISABLE", "httpbin", selector="app: httpbin"))
    assert clusters(workload)[HTTPBIN_CLUSTER].transport_socket_matches


def dr(tls: str, extra: str = "") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin, namespace: foo}}
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    tls: {tls}
{extra}"""


def test_destination_rule_istio_mutual_is_the_transport_socket_for_every_endpoint() -> None:
    c = clusters(httpbin_mesh(dr("{mode: ISTIO_MUTUAL}")))[HTTPBIN_CLUSTER]
    assert not c.transport_socket_matches  # user-supplied: mTLS even to endpoints without a sidecar
    ctx = upstream(c.transport_socket)
    assert sans(ctx) == ["spiffe://cluster.local/ns/foo/sa/httpbin"]
    assert ctx.sni == f"outbound_.8000_._.{HTTPBIN_FOO}"
    assert list(ctx.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "istio"]


def test_destination_rule_istio_mutual_sni_and_sans_override() -> None:
    rule = dr("{mode: ISTIO_MUTUAL, sni: my.sni, subjectAltNames: ['spiffe://cluster.local/ns/foo/sa/other']}")
    ctx = upstream(clusters(httpbin_mesh(rule))[HTTPBIN_CLUSTER].transport_socket)
    assert ctx.sni == "my.sni" and sans(ctx) == ["spiffe://cluster.local/ns/foo/sa/other"]


def test_destination_rule_disable_sends_plaintext() -> None:
    c = clusters(httpbin_mesh(dr("{mode: DISABLE}")))[HTTPBIN_CLUSTER]
    assert not c.transport_socket_matches and not c.HasField("transport_socket")


def test_port_level_and_subset_tls_override_the_rule() -> None:
    """Istio's MergeTrafficPolicy: a port's tls replaces the rule's, a subset's replaces both for its cluster."""
    extra = """    portLevelSettings:
    - port: {number: 9000}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {app: httpbin}
    trafficPolicy:
      tls: {mode: DISABLE}
"""
    snap = httpbin_mesh(dr("{mode: ISTIO_MUTUAL}", extra),
                        services=[service("httpbin", "foo", ports=[(8000, "HTTP"), (9000, "TCP")])])
    got = clusters(snap)
    assert got[HTTPBIN_CLUSTER].HasField("transport_socket")
    for name in (f"outbound|9000||{HTTPBIN_FOO}", f"outbound|8000|v1|{HTTPBIN_FOO}", f"outbound|9000|v1|{HTTPBIN_FOO}"):
        assert not got[name].HasField("transport_socket") and not got[name].transport_socket_matches, name


def test_destination_rule_simple_and_mutual_originate_tls_from_files() -> None:
    simple = upstream(clusters(httpbin_mesh(dr("{mode: SIMPLE, sni: h.example, subjectAltNames: [h.example]}"))
                               )[HTTPBIN_CLUSTER].transport_socket)
    assert simple.sni == "h.example"
    vc = simple.common_tls_context.validation_context
    assert vc.trusted_ca.filename == "/etc/ssl/certs/ca-certificates.crt"  # Istio: the system trust store
    assert [m.matcher.exact for m in vc.match_typed_subject_alt_names] == ["h.example"]
    assert simple.common_tls_context.tls_params.tls_maximum_protocol_version == TlsParams.TLSv1_3
    mutual = upstream(clusters(httpbin_mesh(dr("{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, "
                                               "caCertificates: /ca.pem}")))[HTTPBIN_CLUSTER].transport_socket)
    cert = mutual.common_tls_context.tls_certificates[0]
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/c.pem", "/k.pem")
    assert mutual.common_tls_context.validation_context.trusted_ca.filename == "/ca.pem"


def test_mutual_without_certificates_and_credential_name_at_sidecars_build_no_tls() -> None:
    """constructUpstreamTLS refuses MUTUAL without clientCertificate/privateKey; a sidecar ignores a
    credentialName DR without workloadSelector (buildUpstreamClusterTLSContext): accepted, not enforced."""
    for tls in ("{mode: MUTUAL, caCertificates: /ca.pem}", "{mode: SIMPLE, credentialName: httpbin-cred}",
                "{mode: MUTUAL, credentialName: httpbin-cred}"):
        c = clusters(httpbin_mesh(dr(tls)))[HTTPBIN_CLUSTER]
        assert not c.HasField("transport_socket") and not c.transport_socket_matches, tls


def test_endpoints_of_workloads_with_a_sidecar_carry_tls_mode() -> None:
    """AppendLbEndpointMetadata: envoy.transport_socket_match {tlsMode: istio} on endpoints with a sidecar."""
    snap = httpbin_mesh(services=[service("httpbin", "foo", ports=[(8000, "HTTP")])],
                        workloads=[pod("httpbin-0", "127.0.2.1", "foo", "httpbin", "httpbin"),
                                   pod("httpbin-1", "127.0.2.9", "foo", "httpbin", "httpbin", sidecar_=False)])
    cla = generated(snap, sleep_proxy(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)[HTTPBIN_CLUSTER]
    got = {lb.endpoint.address.socket_address.address: lb.metadata.filter_metadata
           for lle in cla.endpoints for lb in lle.lb_endpoints}
    assert dict(got["127.0.2.1"]["envoy.transport_socket_match"]) == {"tlsMode": "istio"}
    assert "envoy.transport_socket_match" not in got["127.0.2.9"]


def test_one_generator_keeps_proxies_with_and_without_identity_apart() -> None:
    """The outbound key carries the proxy's tlsMode label: a shared cache never hands SDS references to a proxy
    that has no certificate (or plaintext to one that has)."""
    gen, snap = Generator(), httpbin_mesh()

    def matches(proxy: ProxyView) -> int:
        return len(unpacked(gen.resources(snap, proxy, CLUSTER), C)[HTTPBIN_CLUSTER].transport_socket_matches)

    assert matches(sleep_proxy(identity=True)) == 2
    assert matches(sleep_proxy(identity=False)) == 0
    assert matches(sleep_proxy(identity=True)) == 2


def test_gateway_with_identity_uses_auto_mtls_to_sidecars() -> None:
    """Istio's gateways originate mTLS to sidecars as sidecars do (the same cluster builder)."""
    gw = gateway_proxy()
    gw = dataclasses.replace(gw, labels={**gw.labels, TLS_MODE: "istio"})
    assert [m.name for m in clusters(httpbin_mesh(), gw)[HTTPBIN_CLUSTER].transport_socket_matches] == [
        "tlsMode-istio", "tlsMode-disabled"]
    assert not clusters(httpbin_mesh(), gateway_proxy())[HTTPBIN_CLUSTER].transport_socket_matches


def test_dns_cluster_endpoints_carry_tls_mode_inline() -> None:
    """A MESH_INTERNAL DNS ServiceEntry over WorkloadEntries with a sidecar: the inline load assignment has the
    endpoint metadata, so auto mTLS matches there too."""
    svc = Service(hostname="vm.internal", name="vm.internal", namespace="foo",
                  ports=service("x", ports=[(80, "HTTP")]).ports, resolution="DNS", selector={"app": "vm"})
    vm = pod("vm-0", "127.0.9.1", "foo", "vm", "vm")
    c = clusters(httpbin_mesh(services=[svc], workloads=[vm]))["outbound|80||vm.internal"]
    assert c.type == C.STRICT_DNS
    (lb,) = [lb for lle in c.load_assignment.endpoints for lb in lle.lb_endpoints]
    assert dict(lb.metadata.filter_metadata["envoy.transport_socket_match"]) == {"tlsMode": "istio"}
    ctx = upstream(c.transport_socket_matches[0].transport_socket)
    assert sans(ctx) == ["spiffe://cluster.local/ns/foo/sa/vm"]
