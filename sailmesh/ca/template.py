"""Workload certificates encoded directly in DER from parts built once per signing certificate.

`CertificateBuilder.sign` costs about twice the raw signature here (it re-encodes the issuer and the fixed
extensions and parses its own output for every certificate). A workload certificate differs from the next only in
its serial, validity, public key and SPIFFE ID, so the TBSCertificate (RFC 5280 4.1) is assembled from bytes
encoded once, then signed with the CA key. The template proves itself when it is built: it must encode exactly the
bytes `CertificateBuilder` encodes for the same inputs, or the CA keeps using the builder.
"""

from __future__ import annotations

import datetime
from binascii import b2a_base64
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# AlgorithmIdentifier DER of the certificate's signature: ecdsa-with-SHA256 (no parameters, RFC 5758) and
# sha256WithRSAEncryption (NULL parameters, RFC 4055).
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")
VERSION_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
EMPTY_NAME = b"\x30\x00"
SAN_OID = "2.5.29.17"


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (definite length)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER, DER."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(value: int) -> bytes:
    """A non-negative INTEGER, DER (a leading zero byte when the high bit is set)."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def time_der(when: datetime.datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; UTC, whole seconds."""
    t = when.astimezone(datetime.UTC)
    hms = f"{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}Z"
    if 1950 <= t.year < 2050:
        return tlv(0x17, f"{t.year % 100:02d}{hms}".encode())
    return tlv(0x18, f"{t.year:04d}{hms}".encode())


def extension(ext_oid: str, critical: bool, value: bytes) -> bytes:
    """An Extension: extnID, critical (only when TRUE: DER omits a default), extnValue."""
    return tlv(0x30, oid(ext_oid) + (b"\x01\x01\xff" if critical else b"") + tlv(0x04, value))


SAN_CRITICAL = oid(SAN_OID) + b"\x01\x01\xff"


def uri_san(uri: str) -> bytes:
    """The critical SubjectAlternativeName extension with one URI (the subject is empty: RFC 5280 4.2.1.6)."""
    return tlv(0x30, SAN_CRITICAL + tlv(0x04, tlv(0x30, tlv(0x86, uri.encode("ascii")))))


def pem_certificate(der: bytes) -> str:
    """A certificate as PEM text (64-character lines, as OpenSSL and cryptography write it: 48 bytes a line)."""
    body = b"".join([b2a_base64(der[i:i + 48]) for i in range(0, len(der), 48)])
    return f"-----BEGIN CERTIFICATE-----\n{body.decode()}-----END CERTIFICATE-----\n"


# SubjectPublicKeyInfo of an uncompressed P-256 key (RFC 5480), up to the point's 64 bytes: id-ecPublicKey,
# prime256v1, BIT STRING of 66 bytes, no unused bits, 0x04 (uncompressed).
P256_SPKI_HEAD = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200" "04")
P256_SPKI_LEN = len(P256_SPKI_HEAD) + 64


def _after(der: bytes, i: int) -> int:
    """Where the DER element starting at `i` ends."""
    n = der[i + 1]
    if n < 0x80:
        return i + 2 + n
    k = n & 0x7F
    return i + 2 + k + int.from_bytes(der[i + 2:i + 2 + k], "big")


def request_p256_spki(request_info: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a CSR's CertificationRequestInfo (RFC 2986: version, subject, key, attributes)
    when it is an uncompressed P-256 key, byte for byte what cryptography's `public_bytes` encodes for it (the
    caller has parsed and verified the request: the point is on the curve); b"" for any other key or encoding."""
    try:
        start = 2 if request_info[1] < 0x80 else 2 + (request_info[1] & 0x7F)  # inside the outer SEQUENCE
        start = _after(request_info, _after(request_info, start))  # past version and subject
    except IndexError:
        return b""
    spki = request_info[start:start + P256_SPKI_LEN]
    return spki if len(spki) == P256_SPKI_LEN and spki.startswith(P256_SPKI_HEAD) else b""


class WorkloadTemplate:
    """Encodes and signs workload certificates issued by `issuer` with `key` and the fixed `extensions`."""

    def __init__(self, issuer: x509.Name, key: SigningKey,
                 extensions: Sequence[tuple[x509.ExtensionType, bool]]) -> None:
        sha256 = hashes.SHA256()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ECDSA_SHA256
            ecdsa = ec.ECDSA(sha256)
            self._sign: Callable[[bytes], bytes] = lambda tbs: key.sign(tbs, ecdsa)
        else:
            algorithm = RSA_SHA256
            pkcs1 = padding.PKCS1v15()
            self._sign = lambda tbs: key.sign(tbs, pkcs1, sha256)
        self._algorithm = algorithm
        self._head = VERSION_3  # then the serial
        self._after_serial = algorithm + issuer.public_bytes()  # then the validity
        self._fixed = b"".join(extension(value.oid.dotted_string, critical, value.public_bytes())
                               for value, critical in extensions)

    def tbs(self, serial: int, not_before: datetime.datetime, not_after: datetime.datetime, spki: bytes,
            uri: str) -> bytes:
        """The TBSCertificate DER."""
        return tlv(0x30, b"".join((
            self._head, integer(serial), self._after_serial,
            tlv(0x30, time_der(not_before) + time_der(not_after)), EMPTY_NAME, spki,
            tlv(0xA3, tlv(0x30, self._fixed + uri_san(uri))))))

    def sign(self, serial: int, not_before: datetime.datetime, not_after: datetime.datetime,
             public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, uri: str, spki: bytes = b"") -> bytes:
        """A signed workload certificate, DER (`spki`: the key's SubjectPublicKeyInfo DER when already known)."""
        spki = spki or public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        tbs = self.tbs(serial, not_before, not_after, spki, uri)
        return tlv(0x30, tbs + self._algorithm + tlv(0x03, b"\x00" + self._sign(tbs)))

    def matches(self, builder: x509.CertificateBuilder, key: SigningKey, issuer: x509.Certificate) -> bool:
        """Whether this template encodes exactly what `builder` (the issuer and fixed extensions) signs with `key`
        for a sample workload, and `issuer` verifies its signature (checked once: any difference and the CA keeps
        using the builder)."""
        sample_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        later = datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        serial, uri = x509.random_serial_number(), "spiffe://cluster.local/ns/template/sa/check"
        reference = (builder.public_key(sample_key).serial_number(serial).not_valid_before(now).not_valid_after(later)
                     .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
                     .sign(key, hashes.SHA256()))
        try:
            ours = x509.load_der_x509_certificate(self.sign(serial, now, later, sample_key, uri))
            ours.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return (ours.tbs_certificate_bytes == reference.tbs_certificate_bytes
                and ours.signature_algorithm_oid == reference.signature_algorithm_oid)
