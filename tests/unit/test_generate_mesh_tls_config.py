"""The mesh config's TLS settings (Istio's MeshConfig.TLSConfig, istio.io "Global Mesh Options") in generated config.

Istio's rules matched (mesh/v1alpha1/config.proto):
- `meshMTLS`: "Configuration of mTLS for traffic between workloads with ISTIO_MUTUAL TLS traffic";
  minProtocolVersion raises the inbound mTLS minimum (BuildInboundTLS; default TLS 1.2), cipherSuites replace
  Istio's SupportedCiphers; "Mesh mTLS does not respect ECDH curves".
- `tlsDefaults`: "Configuration of TLS for all traffic except for ISTIO_MUTUAL mode. Currently, this supports
  configuration of ecdh_curves and cipher_suites only": gateway servers that set none (BuildListenerTLSContext)
  and DestinationRule SIMPLE/MUTUAL origination; never the ISTIO_MUTUAL contexts.
"""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from sailmesh.api import meshconfig
from sailmesh.errors import ModelError
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_gateway_tls import SERVICES, gateway, tls_context
from tests.unit.test_generate_mtls import HTTPBIN_CLUSTER, dr, httpbin_mesh, sleep_proxy, upstream
from tests.unit.test_generate_peer_authn import downstream, httpbin_proxy
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources

TlsParams = common_pb2.TlsParameters
MESH = {"meshMTLS": {"minProtocolVersion": "TLSV1_3", "cipherSuites": ["ECDHE-ECDSA-AES256-GCM-SHA384"]},
        "tlsDefaults": {"ecdhCurves": ["P-384"], "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]}}


def with_mesh(snapshot: MeshSnapshot, raw: dict = MESH) -> MeshSnapshot:  # type: ignore[type-arg]
    return dataclasses.replace(snapshot, mesh_config=meshconfig.from_mapping(raw))


def test_mesh_mtls_sets_the_inbound_minimum_and_ciphers() -> None:
    lis = generated(with_mesh(httpbin_mesh()), httpbin_proxy(), LISTENER, listener_pb2.Listener)["127.0.2.1_8000"]
    params = downstream(lis.filter_chains[0]).common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == TlsParams.TLSv1_3
    assert params.tls_maximum_protocol_version == TlsParams.TLSv1_3
    assert list(params.cipher_suites) == ["ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert not params.ecdh_curves  # tlsDefaults never reach ISTIO_MUTUAL


def test_mesh_mtls_does_not_touch_the_client_side_and_tls_defaults_do_not_either() -> None:
    """The client's ISTIO_MUTUAL context keeps TLS 1.2-1.3 (servers may not be Envoy) and no tlsDefaults."""
    ctx = upstream(generated(with_mesh(httpbin_mesh(dr("{mode: ISTIO_MUTUAL}"))), sleep_proxy(), CLUSTER,
                             cluster_pb2.Cluster)[HTTPBIN_CLUSTER].transport_socket)
    params = ctx.common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == TlsParams.TLSv1_2
    assert not params.ecdh_curves and not params.cipher_suites


def test_tls_defaults_reach_destination_rule_origination() -> None:
    ctx = upstream(generated(with_mesh(httpbin_mesh(dr("{mode: SIMPLE}"))), sleep_proxy(), CLUSTER,
                             cluster_pb2.Cluster)[HTTPBIN_CLUSTER].transport_socket)
    params = ctx.common_tls_context.tls_params
    assert list(params.ecdh_curves) == ["P-384"]
    assert list(params.cipher_suites) == ["ECDHE-RSA-AES128-GCM-SHA256"]


def test_tls_defaults_fill_in_for_a_gateway_server_that_sets_none() -> None:
    gw = gateway("""  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, ecdhCurves: [X25519],
          cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]}
""")
    snap = with_mesh(make_snapshot(resources(gw), SERVICES))
    a, b = generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_443"].filter_chains
    pa, pb = (tls_context(c).common_tls_context.tls_params for c in (a, b))
    assert (list(pa.ecdh_curves), list(pa.cipher_suites)) == (["P-384"], ["ECDHE-RSA-AES128-GCM-SHA256"])
    assert (list(pb.ecdh_curves), list(pb.cipher_suites)) == (["X25519"], ["ECDHE-ECDSA-AES128-GCM-SHA256"])


def test_without_the_settings_nothing_changes() -> None:
    lis = generated(httpbin_mesh(), httpbin_proxy(), LISTENER, listener_pb2.Listener)["127.0.2.1_8000"]
    assert downstream(lis.filter_chains[0]).common_tls_context.tls_params.tls_minimum_protocol_version == \
        TlsParams.TLSv1_2


@pytest.mark.parametrize(("raw", "field"), [
    ({"meshMTLS": {"minProtocolVersion": "TLSV1_1"}}, "meshMTLS.minProtocolVersion"),
    ({"meshMTLS": {"cipherSuites": ["NOT-A-SUITE"]}}, "meshMTLS.cipherSuites"),
    ({"tlsDefaults": {"cipherSuites": ["NOT-A-SUITE"]}}, "tlsDefaults.cipherSuites"),
    ({"tlsDefaults": {"ecdhCurves": ["P-999"]}}, "tlsDefaults.ecdhCurves"),
])
def test_bad_values_are_refused_naming_the_field(raw: dict, field: str) -> None:  # type: ignore[type-arg]
    """Envoy would reject the listener or cluster: the mesh config is refused before it reaches a proxy."""
    with pytest.raises(ModelError, match=field.replace(".", r"\.")):
        meshconfig.from_mapping(raw)


def test_keys_istio_ignores_are_reported_not_dropped() -> None:
    """meshMTLS.ecdhCurves ("Mesh mTLS does not respect ECDH curves") and tlsDefaults.minProtocolVersion
    ("supports ecdh_curves and cipher_suites only") are kept as unmodelled: reported "accepted, not enforced"."""
    mc = meshconfig.from_mapping({"meshMTLS": {"ecdhCurves": ["P-256"]},
                                  "tlsDefaults": {"minProtocolVersion": "TLSV1_3"}})
    assert set(mc.unmodelled) == {"meshMTLS.ecdhCurves", "tlsDefaults.minProtocolVersion"}
    assert meshconfig.from_mapping(MESH).unmodelled == ()
