"""Gateway ServerTLSSettings beyond the secure-ingress task, on the embedded mesh with real Envoy and real handshakes:
`caCertCredentialName` (with the CRL stored beside the CA), `tlsCertificates` (an RSA and an ECDSA certificate on
one server), `ecdhCurves` and `insecureSkipVerify` (Istio's BuildListenerTLSContext and istiod's SDS)."""

from __future__ import annotations

import datetime as dt
import pathlib
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_gateway_tls import HTTPBIN, b64, issue, make_ca, needs_curl

pytestmark = pytest.mark.e2e


def issue_rsa(ca: tuple[x509.Certificate, object], cn: str) -> tuple[bytes, bytes]:
    """An RSA server certificate for `cn` (beside the EC ones `issue` makes)."""
    ca_cert, ca_key = ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Pki:
    """The server CA (example.com), the client CA the caCertCredentialName Secret holds (with a CRL revoking
    `revoked`), and a stranger CA the server credential's own `ca.crt` names (so trusting it would be the bug)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        server_ca, client_ca, stranger_ca = make_ca("example.com"), make_ca("client-ca"), make_ca("stranger")
        pem = serialization.Encoding.PEM
        self.ca_pem, self.client_ca_pem = server_ca[0].public_bytes(pem), client_ca[0].public_bytes(pem)
        self.stranger_ca_pem = stranger_ca[0].public_bytes(pem)
        self.certs = {"caref": issue(server_ca, "caref.example.com"), "skip": issue(server_ca, "skip.example.com"),
                      "multi-ecdsa": issue(server_ca, "multi.example.com"),
                      "multi-rsa": issue_rsa(server_ca, "multi.example.com"),  # type: ignore[arg-type]
                      "client": issue(client_ca, "client", True), "revoked": issue(client_ca, "revoked", True),
                      "stranger": issue(stranger_ca, "client", True)}
        for name, (cert, key) in self.certs.items():
            (root / f"{name}.crt").write_bytes(cert)
            (root / f"{name}.key").write_bytes(key)
            (root / f"{name}.key").chmod(0o600)
        (root / "ca.pem").write_bytes(self.ca_pem)
        now = dt.datetime.now(dt.UTC)
        revoked = x509.load_pem_x509_certificate(self.certs["revoked"][0])
        self.crl_pem = (x509.CertificateRevocationListBuilder().issuer_name(client_ca[0].subject).last_update(now)
                        .next_update(now + dt.timedelta(days=1))
                        .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                                 .serial_number(revoked.serial_number).revocation_date(now).build())
                        .sign(client_ca[1], hashes.SHA256()).public_bytes(pem))

    def path(self, name: str) -> str:
        return str(self.root / name)


def manifests(pki: Pki) -> str:
    def tls_secret(name: str, cert: str, ca: bytes) -> str:
        crt, key = pki.certs[cert]
        return f"""apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: {name}, namespace: istio-system}}
data: {{tls.crt: {b64(crt)}, tls.key: {b64(key)}, ca.crt: {b64(ca)}}}
---
"""
    secrets = tls_secret("caref-credential", "caref", pki.stranger_ca_pem) + tls_secret(
        "skip-credential", "skip", pki.client_ca_pem)
    return f"""{HTTPBIN}{secrets}
# a generic Secret holding only a CA and its CRL (Istio's `cacert` / `crl` keys)
apiVersion: v1
kind: Secret
metadata: {{name: client-ca-cacert, namespace: istio-system}}
data: {{cacert: {b64(pki.client_ca_pem)}, crl: {b64(pki.crl_pem)}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls-fields, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-caref, protocol: HTTPS}}
    hosts: [caref.example.com]
    tls: {{mode: MUTUAL, credentialName: caref-credential, caCertCredentialName: client-ca-cacert}}
  - port: {{number: 443, name: https-multi, protocol: HTTPS}}
    hosts: [multi.example.com]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {{serverCertificate: {pki.path("multi-rsa.crt")}, privateKey: {pki.path("multi-rsa.key")}}}
      - {{serverCertificate: {pki.path("multi-ecdsa.crt")}, privateKey: {pki.path("multi-ecdsa.key")}}}
      ecdhCurves: [P-384]
  - port: {{number: 443, name: https-skip, protocol: HTTPS}}
    hosts: [skip.example.com]
    tls: {{mode: MUTUAL, credentialName: skip-credential, insecureSkipVerify: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [caref.example.com, multi.example.com, skip.example.com]
  gateways: [tls-fields]
  http:
  - route: [{{destination: {{host: httpbin, port: {{number: 8000}}}}}}]
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("gateway-tls-fields-config")
    (config / "tls-fields.yaml").write_text(manifests(pki))
    m = RunningMesh(str(tmp_path_factory.mktemp("gateway-tls-fields-state")), dirs=[str(config)])
    try:
        yield m
    finally:
        m.stop()


def curl(mesh: RunningMesh, pki: Pki, host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """curl --resolve host:8443:<gateway ip> --cacert ca.pem https://host:8443/status/418, printing the code."""
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--noproxy",
                           "*", "--resolve", f"{host}:8443:{mesh.gateway_ip}", "--cacert", pki.path("ca.pem"),
                           *extra, f"https://{host}:8443/status/418"], capture_output=True, text=True, timeout=30)


def client(pki: Pki, name: str) -> tuple[str, ...]:
    return ("--cert", pki.path(f"{name}.crt"), "--key", pki.path(f"{name}.key"))


def eventually_418(mesh: RunningMesh, pki: Pki, host: str, *extra: str) -> None:
    last: list[subprocess.CompletedProcess[str]] = []

    def ok() -> bool:
        last[:] = [curl(mesh, pki, host, *extra)]
        return last[0].stdout == "418"
    try:
        wait_for(ok, timeout=90, interval=0.5, what=f"https://{host}/status/418")
    except BaseException:
        raise AssertionError(f"last: {last and (last[0].stdout, last[0].stderr)}\n{mesh.output()[-4000:]}") from None


def refused(r: subprocess.CompletedProcess[str]) -> bool:
    return r.stdout == "000" and r.returncode != 0


@needs_curl
def test_ca_cert_credential_name_verifies_clients_with_its_own_ca_and_crl(mesh: RunningMesh, pki: Pki) -> None:
    """caCertCredentialName "takes precedence over CA certificates in the Secret referenced with credentialName":
    the client CA's certificate gets 418; a certificate of the CA in the credential's own `ca.crt` is refused, as
    are one the Secret's `crl` revokes and none at all."""
    eventually_418(mesh, pki, "caref.example.com", *client(pki, "client"))
    for name in ("stranger", "revoked"):
        r = curl(mesh, pki, "caref.example.com", *client(pki, name))
        assert refused(r), (name, r.stdout, r.stderr)
    r = curl(mesh, pki, "caref.example.com")
    assert refused(r), (r.stdout, r.stderr)


def served(mesh: RunningMesh, pki: Pki, cipher: str) -> bytes:
    """The certificate the gateway serves multi.example.com to a TLS 1.2 client offering only `cipher`."""
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with socket.create_connection((mesh.gateway_ip, 8443), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="multi.example.com") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").public_bytes(
            serialization.Encoding.PEM)


@needs_curl
def test_tls_certificates_serve_rsa_and_ecdsa_and_ecdh_curves_limit_the_groups(mesh: RunningMesh, pki: Pki) -> None:
    """tlsCertificates "mainly used for specifying RSA and ECDSA certificates for the same server": an RSA-only
    client gets the RSA certificate, an ECDSA-only one the ECDSA certificate; ecdhCurves [P-384] refuses a client
    offering only X25519 and serves one offering P-384."""
    eventually_418(mesh, pki, "multi.example.com", "--curves", "P-384")
    assert served(mesh, pki, "ECDHE-RSA-AES128-GCM-SHA256") == pki.certs["multi-rsa"][0]
    assert served(mesh, pki, "ECDHE-ECDSA-AES128-GCM-SHA256") == pki.certs["multi-ecdsa"][0]
    r = curl(mesh, pki, "multi.example.com", "--curves", "X25519")
    assert refused(r), (r.stdout, r.stderr)


@needs_curl
def test_insecure_skip_verify_lets_an_untrusted_client_certificate_through(mesh: RunningMesh, pki: Pki) -> None:
    """insecureSkipVerify on a MUTUAL server: "the proxy will try to validate the certificate, but even if the
    validation fails, it will allow the connection through" (ACCEPT_UNTRUSTED); a certificate is still required."""
    eventually_418(mesh, pki, "skip.example.com", *client(pki, "stranger"))
    eventually_418(mesh, pki, "skip.example.com", *client(pki, "client"))
    r = curl(mesh, pki, "skip.example.com")
    assert refused(r), (r.stdout, r.stderr)


def test_no_gap_reported(mesh: RunningMesh, pki: Pki) -> None:
    """Every field of the Gateway is translated: no accepted-not-enforced note for it."""
    eventually_418(mesh, pki, "skip.example.com", *client(pki, "client"))
    assert "Gateway default/tls-fields: accepted, not enforced" not in mesh.output()
