"""DestinationRule client TLS with `credentialName` (Istio's buildUpstreamClusterTLSContext +
ApplyCustomSDSToClientCommonTLSContext): at gateways the client certificate (MUTUAL) and the CA come over SDS from
the control plane (`kubernetes://<name>`, `kubernetes://<name>-cacert`, from Secrets in the gateway's namespace);
at sidecars a rule without workloadSelector builds no TLS (Istio's "hack to avoid egress sds" for sidecars)."""

from __future__ import annotations

import base64

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate.affect import affected_types
from sailmesh.generate.enforcement import not_enforced
from sailmesh.xds.types import CLUSTER, SECRET
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources, service, sidecar

C = cluster_pb2.Cluster
CLUSTER_NAME = "outbound|443||nginx.default.svc.cluster.local"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dr(tls: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: originate-mtls-for-nginx, namespace: default}}
spec:
  host: nginx.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    portLevelSettings:
    - port: {{number: 443}}
      tls: {tls}
"""


SECRET_YAML = f"""apiVersion: v1
kind: Secret
metadata: {{name: client-credential, namespace: istio-system}}
data: {{tls.crt: {b64(CERT)}, tls.key: {b64(KEY)}, ca.crt: {b64(CA)}}}
"""


def snap(tls: str, secret: bool = True):  # type: ignore[no-untyped-def]
    config = resources(dr(tls), *([SECRET_YAML] if secret else []))
    return make_snapshot(config, services=[service("nginx", ports=((443, "HTTPS"),))])


def upstream(c: C) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.typed_config.Unpack(ctx), c
    return ctx


def test_mutual_credential_at_a_gateway_comes_over_sds() -> None:
    """Istio's egress mTLS origination task: MUTUAL + credentialName + sni on the egress gateway's cluster."""
    s = snap("{mode: MUTUAL, credentialName: client-credential, sni: my-nginx.mesh-external.svc.cluster.local}")
    ctx = upstream(generated(s, gateway_proxy(), CLUSTER, C)[CLUSTER_NAME])
    assert ctx.sni == "my-nginx.mesh-external.svc.cluster.local"
    common = ctx.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["kubernetes://client-credential"]
    assert common.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://client-credential-cacert"
    assert combined.HasField("default_validation_context")  # Envoy rejects a combined context without it
    # ... and the gateway is served both secrets (the CA from the Secret's ca.crt: Istio's GetCaCert fallback)
    secrets = generated(s, gateway_proxy(), SECRET, secret_pb2.Secret)
    assert secrets["kubernetes://client-credential"].tls_certificate.certificate_chain.inline_bytes == CERT
    assert secrets["kubernetes://client-credential-cacert"].validation_context.trusted_ca.inline_bytes == CA


def test_simple_credential_verifies_with_the_ca_only_and_sni_defaults_to_the_host() -> None:
    s = snap("{mode: SIMPLE, credentialName: client-credential, subjectAltNames: [nginx.example.com]}")
    ctx = upstream(generated(s, gateway_proxy(), CLUSTER, C)[CLUSTER_NAME])
    assert ctx.sni == "nginx.default.svc.cluster.local"
    assert not ctx.common_tls_context.tls_certificate_sds_secret_configs
    combined = ctx.common_tls_context.combined_validation_context
    assert [m.matcher.exact for m in combined.default_validation_context.match_typed_subject_alt_names] == [
        "nginx.example.com"]
    assert set(generated(s, gateway_proxy(), SECRET, secret_pb2.Secret)) == {"kubernetes://client-credential-cacert"}


def test_insecure_skip_verify_asks_for_no_ca() -> None:
    s = snap("{mode: MUTUAL, credentialName: client-credential, insecureSkipVerify: true}")
    ctx = upstream(generated(s, gateway_proxy(), CLUSTER, C)[CLUSTER_NAME])
    assert not ctx.common_tls_context.HasField("combined_validation_context")


def test_sidecars_ignore_credential_name_without_workload_selector() -> None:
    s = snap("{mode: MUTUAL, credentialName: client-credential}")
    c = generated(s, sidecar(), CLUSTER, C)[CLUSTER_NAME]
    assert not c.HasField("transport_socket")
    assert generated(s, sidecar(), SECRET, secret_pb2.Secret) == {}


def test_a_destination_rule_change_pushes_secrets_and_is_enforced() -> None:
    s = snap("{mode: MUTUAL, credentialName: client-credential}")
    change = Change(frozenset({ResourceKey("DestinationRule", "default", "originate-mtls-for-nginx")}))
    assert SECRET in affected_types(change, s, s)
    (rule,) = [r for r in resources(dr("{mode: MUTUAL, credentialName: client-credential}"))]
    assert not_enforced(rule) == []
