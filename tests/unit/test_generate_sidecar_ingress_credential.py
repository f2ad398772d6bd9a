"""Sidecar ingress `tls.credentialName`. Istio's validation refuses it ("sidecar: credentialName is not currently
supported", pkg/config/validation ValidateSidecar), and so does `sailmesh validate`/`apply`; a Sidecar that reaches
the store anyway (Kubernetes without the validating webhook) is translated as istiod's BuildListenerTLSContext
translates it: the certificate over SDS `kubernetes://<name>` (and the client CA `...-cacert` for MUTUAL) from the
Secrets of the sidecar's namespace, served to that sidecar over ADS."""

from __future__ import annotations

import base64
import dataclasses

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.api.validate import errors_only, validate
from sailmesh.generate.affect import affected_types
from sailmesh.xds.types import LISTENER, SECRET
from tests.unit.test_generate_support import bookinfo, generated, resources, sidecar

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
SIDECAR = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTPS, name: https}
    defaultEndpoint: 0.0.0.0:9080
    tls: {mode: MUTUAL, credentialName: reviews-credential}
"""


def secret(ns: str) -> str:
    b = {k: base64.b64encode(v).decode() for k, v in {"crt": CERT, "key": KEY, "ca": CA}.items()}
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: reviews-credential, namespace: {ns}}}
data: {{tls.crt: {b["crt"]}, tls.key: {b["key"]}, ca.crt: {b["ca"]}}}
"""


def reviews():  # type: ignore[no-untyped-def]
    return sidecar("reviews-v1-0", "127.0.1.3", app_ports={9080: 41000}, app="reviews", version="v1")


def test_istio_validation_refuses_it() -> None:
    (sc,) = resources(SIDECAR)
    assert any("sidecar: credentialName is not currently supported" in str(i) for i in errors_only(validate(sc)))


def test_credential_comes_over_sds_from_the_sidecars_namespace() -> None:
    snap = bookinfo(SIDECAR, secret("default"), secret("istio-system"))
    (chain,) = generated(snap, reviews(), LISTENER, listener_pb2.Listener)["127.0.1.3_9080"].filter_chains
    ctx = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(ctx)
    common = ctx.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["kubernetes://reviews-credential"]
    assert common.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
    assert common.combined_validation_context.validation_context_sds_secret_config.name == \
        "kubernetes://reviews-credential-cacert"
    assert ctx.require_client_certificate.value
    secrets = generated(snap, reviews(), SECRET, secret_pb2.Secret)
    assert secrets["kubernetes://reviews-credential"].tls_certificate.private_key.inline_bytes == KEY
    assert secrets["kubernetes://reviews-credential-cacert"].validation_context.trusted_ca.inline_bytes == CA
    # another workload's sidecar is served nothing; a Secret of another namespace is never read
    assert generated(snap, sidecar(), SECRET, secret_pb2.Secret) == {}
    assert generated(bookinfo(SIDECAR, secret("istio-system")), reviews(), SECRET, secret_pb2.Secret) == {}


def test_a_sidecar_change_pushes_secrets_only_when_an_ingress_names_a_credential() -> None:
    change = Change.of(ResourceKey("Sidecar", "default", "reviews-ingress"))
    with_credential = bookinfo(SIDECAR, secret("default"))
    assert SECRET in affected_types(change, with_credential, dataclasses.replace(with_credential, version=2))
    plain = bookinfo()
    assert SECRET not in affected_types(change, plain, dataclasses.replace(plain, version=2))
