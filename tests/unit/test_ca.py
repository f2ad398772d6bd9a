"""The CA: self-signed root on disk, Istio's plug-in cacerts layout, SPIFFE certificates, join tokens."""

from __future__ import annotations

import datetime
import logging
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailmesh.api.identity import Identity
from sailmesh.ca.authority import CaOptions, CertificateAuthority, key_pem, pem
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import AuthenticationError, CertificateError, IdentityError

SLEEP = Identity("cluster.local", "foo", "sleep")


def csr_for(uri: str | None, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uri is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                                        critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_self_signed_root_is_created_once_with_a_private_key(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    key_file = tmp_path / "ca" / "ca-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    root = x509.load_pem_x509_certificate((tmp_path / "ca" / "root-cert.pem").read_bytes())
    # Istio's self-signed root: O=<trust domain>, CA:TRUE.
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = CertificateAuthority.self_signed(tmp_path)  # a restart keeps the root (and every cert stays valid)
    assert again.trust_bundle() == ca.trust_bundle()


def test_a_root_key_readable_by_others_is_refused(tmp_path):
    CertificateAuthority.self_signed(tmp_path)
    os.chmod(tmp_path / "ca" / "ca-key.pem", 0o644)
    with pytest.raises(CertificateError, match="0600"):
        CertificateAuthority.self_signed(tmp_path)


def test_workload_certificate_has_istios_shape(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    issued = ca.sign_csr(csr_for(SLEEP.uri), SLEEP)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/foo/sa/sleep"]
    assert cert.subject == x509.Name([])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The chain: leaf first, root last; the leaf verifies against the root.
    assert issued.root_pem == ca.trust_bundle() and len(issued.chain) == 2
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(issued.root_pem.encode()))
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23, minutes=58) < lifetime <= datetime.timedelta(hours=24)  # Istio's 24 h


def test_a_csr_without_san_gets_the_proven_identity(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr_for(None), SLEEP).cert_pem.encode())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SLEEP.uri]


def test_a_csr_for_another_identity_is_refused(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    with pytest.raises(IdentityError, match="ns/bar/sa/httpbin"):
        ca.sign_csr(csr_for("spiffe://cluster.local/ns/bar/sa/httpbin"), SLEEP)


def test_rsa_2048_is_accepted_and_small_keys_are_not(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    ca.sign_csr(csr_for(SLEEP.uri, rsa.generate_private_key(65537, 2048)), SLEEP)
    with pytest.raises(CertificateError, match="2048"):
        ca.sign_csr(csr_for(SLEEP.uri, rsa.generate_private_key(65537, 1024)), SLEEP)
    with pytest.raises(CertificateError, match="parsed"):
        ca.sign_csr("not a csr", SLEEP)


def tampered(csr_pem: str) -> str:
    """The same CSR with the signature's last byte changed (still parses; proves nothing)."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("key, hash_, pad", [
    (ec.generate_private_key(ec.SECP256R1()), hashes.SHA256(), None),
    (ec.generate_private_key(ec.SECP384R1()), hashes.SHA384(), None),
    (rsa.generate_private_key(65537, 2048), hashes.SHA256(), None),
    (rsa.generate_private_key(65537, 2048), hashes.SHA256(),  # RSA-PSS: checked by is_signature_valid
     padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)),
], ids=["ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pkcs1-sha256", "rsa-pss"])
def test_the_csr_must_prove_possession_of_its_key(tmp_path, key, hash_, pad):
    # Istio's CA checks the CSR's signature (x509.CertificateRequest.CheckSignature) before signing
    ca = CertificateAuthority.self_signed(tmp_path)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SLEEP.uri)]), critical=True)
    good = builder.sign(key, hash_, rsa_padding=pad).public_bytes(serialization.Encoding.PEM).decode()
    cert = x509.load_pem_x509_certificate(ca.sign_csr(good, SLEEP).cert_pem.encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    with pytest.raises(CertificateError, match="signature does not verify"):
        ca.sign_csr(tampered(good), SLEEP)


def test_ttl_default_floor_and_maximum(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path, CaOptions(min_ttl_s=60))
    assert ca.ttl(0) == 24 * 3600
    assert ca.ttl(1) == 60  # raised to the one-minute floor
    assert ca.ttl(3600) == 3600
    with pytest.raises(CertificateError, match="max allowed"):  # Istio refuses a TTL above MAX_WORKLOAD_CERT_TTL
        ca.ttl(91 * 24 * 3600)
    short = CertificateAuthority.self_signed(tmp_path, CaOptions(min_ttl_s=2))
    issued = short.sign_csr(csr_for(SLEEP.uri), SLEEP, ttl_s=3)
    assert (issued.not_after - issued.not_before).total_seconds() == pytest.approx(63, abs=1)  # 1 min backdate


def _make_plugin(folder, with_intermediate=True):
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, key, issuer_name, issuer_key):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(issuer_key, hashes.SHA256()))

    root = cert("Root CA", root_key, None, root_key)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("Intermediate CA", ca_key, root.subject, root_key)
    folder.mkdir()
    (folder / "root-cert.pem").write_text(pem(root))
    (folder / "ca-cert.pem").write_text(pem(ca_cert))
    (folder / "ca-key.pem").write_bytes(key_pem(ca_key))
    (folder / "cert-chain.pem").write_text(pem(ca_cert) + pem(root))  # Istio's samples/certs layout
    return root, ca_cert


def test_plugin_ca_signs_with_the_intermediate(tmp_path):
    root, ca_cert = _make_plugin(tmp_path / "cacerts")
    ca = CertificateAuthority.plugin(tmp_path / "cacerts")
    issued = ca.sign_csr(csr_for(SLEEP.uri), SLEEP)
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    leaf.verify_directly_issued_by(ca_cert)
    assert issued.root_pem == pem(root) and ca.trust_bundle() == pem(root)


def test_plugin_ca_with_missing_or_mismatched_files_is_refused(tmp_path):
    _make_plugin(tmp_path / "cacerts")
    (tmp_path / "cacerts" / "ca-key.pem").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(CertificateError, match="does not match"):
        CertificateAuthority.plugin(tmp_path / "cacerts")
    (tmp_path / "cacerts" / "cert-chain.pem").unlink()
    with pytest.raises(CertificateError, match=r"cert-chain\.pem"):
        CertificateAuthority.plugin(tmp_path / "cacerts")


def test_join_tokens_are_bound_stored_hashed_and_survive_a_restart(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "tokens.json"
    tokens = JoinTokens(path)
    token = tokens.issue("foo", "sleep")
    grant = tokens.authenticate(token)
    assert (grant.namespace, grant.service_account) == ("foo", "sleep")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text() and token not in caplog.text
    assert JoinTokens(path).authenticate(token).service_account == "sleep"
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token + "x")
    assert tokens.revoke("foo", "sleep") == 1
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token)
