"""The CA's DER template for workload certificates encodes exactly what cryptography's CertificateBuilder does."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailmesh.ca.template import WorkloadTemplate, integer, pem_certificate, request_p256_spki, time_der, tlv

URI = "spiffe://cluster.local/ns/foo/sa/sleep"


def _issuer(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def _fixed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> list[tuple[x509.ExtensionType, bool]]:
    return [(x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)]


@pytest.mark.parametrize("ca_key", [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                                    rsa.generate_private_key(65537, 2048)], ids=["p256", "p384", "rsa2048"])
@pytest.mark.parametrize("workload_key", [ec.generate_private_key(ec.SECP256R1()),
                                          rsa.generate_private_key(65537, 2048)], ids=["ec", "rsa"])
@pytest.mark.parametrize("not_after", [datetime.datetime(2027, 3, 4, 5, 6, 7, 891011, tzinfo=datetime.UTC),
                                       datetime.datetime(2050, 1, 1, 0, 0, 0, tzinfo=datetime.UTC)],
                         ids=["utctime", "generalizedtime"])
def test_template_encodes_what_the_builder_encodes(ca_key, workload_key, not_after):
    issuer = _issuer(ca_key)
    base = x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
    for value, critical in _fixed(ca_key):
        base = base.add_extension(value, critical=critical)
    template = WorkloadTemplate(issuer.subject, ca_key, _fixed(ca_key))
    assert template.matches(base, ca_key, issuer)
    not_before = datetime.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=datetime.UTC)  # microseconds dropped
    for serial in (1, 127, 128, 255, 256, x509.random_serial_number(), 1 << 151, (1 << 158) | 1):
        pem = pem_certificate(template.sign(serial, not_before, not_after, workload_key.public_key(), URI))
        ours = x509.load_pem_x509_certificate(pem.encode())
        ours.verify_directly_issued_by(issuer)
        reference = (base.public_key(workload_key.public_key()).serial_number(serial)
                     .not_valid_before(not_before).not_valid_after(not_after)
                     .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=True)
                     .sign(ca_key, hashes.SHA256()))
        assert ours.tbs_certificate_bytes == reference.tbs_certificate_bytes
        assert ours.signature_algorithm_oid == reference.signature_algorithm_oid
        assert pem == ours.public_bytes(serialization.Encoding.PEM).decode()


def test_a_template_that_encodes_otherwise_does_not_match():
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _issuer(key)
    base = x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
    for value, critical in _fixed(key):
        base = base.add_extension(value, critical=critical)
    # The builder has an extension the template lacks: the check must notice.
    assert not WorkloadTemplate(issuer.subject, key, _fixed(key)[:2]).matches(base, key, issuer)
    # Signed with another key than the issuer's: the signature check must notice.
    other = ec.generate_private_key(ec.SECP256R1())
    assert not WorkloadTemplate(issuer.subject, other, _fixed(key)).matches(base, other, issuer)


def test_der_primitives():
    assert tlv(0x04, b"x" * 5) == b"\x04\x05" + b"x" * 5
    assert tlv(0x04, b"x" * 200)[:3] == b"\x04\x81\xc8"
    assert tlv(0x04, b"x" * 300)[:4] == b"\x04\x82\x01\x2c"
    assert integer(0) == b"\x02\x01\x00"
    assert integer(127) == b"\x02\x01\x7f"
    assert integer(128) == b"\x02\x02\x00\x80"
    assert time_der(datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)) == b"\x17\x0d491231235959Z"
    assert time_der(datetime.datetime(2050, 1, 1, tzinfo=datetime.UTC)) == b"\x18\x0f20500101000000Z"


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
                                 rsa.generate_private_key(65537, 2048)], ids=["p256", "p384", "rsa2048"])
@pytest.mark.parametrize("subject", [x509.Name([]), x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                                                   "o" * 150)])],
                         ids=["empty-subject", "long-subject"])
def test_the_csr_key_is_reused_as_encoded_only_for_canonical_p256(key, subject):
    """The CA copies a CSR's P-256 key into the certificate as the CSR encodes it: it must be byte for byte what
    `public_bytes` encodes (any other key, or a subject whose length needs the long DER form, is handled)."""
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=True)
           .sign(key, hashes.SHA256()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    taken = request_p256_spki(csr.tbs_certrequest_bytes)
    assert taken == (spki if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1" else b"")


def test_a_compressed_or_truncated_key_is_not_reused():
    """A compressed P-256 point (valid X.509, but not what `public_bytes` writes) and a cut request are re-encoded."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    algorithm = tlv(0x30, bytes.fromhex("06072a8648ce3d0201") + bytes.fromhex("06082a8648ce3d030107"))
    compressed = tlv(0x30, algorithm + tlv(0x03, b"\x00" + point))
    info = tlv(0x30, integer(0) + tlv(0x30, b"") + compressed + b"\xa0\x00")
    assert request_p256_spki(info) == b""
    good = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).tbs_certrequest_bytes
    assert request_p256_spki(good) != b""
    for cut in (1, 5, 20, 40):
        assert request_p256_spki(good[:cut]) == b""
