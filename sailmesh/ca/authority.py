"""The mesh's certificate authority: a self-signed root kept in the state dir, or a plug-in CA (Istio's `cacerts`).

Workload certificates follow Istio's shape: an empty subject, one critical URI SAN with the SPIFFE ID of the
identity the caller proved (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), client and server auth, and the chain
leaf first, root last (istiod's `IstioCertificateResponse.cert_chain`). The identity never comes from the CSR:
a CSR that asks for another SPIFFE ID (or any other SAN) is refused.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from sailmesh.api.identity import Identity
from sailmesh.ca.template import SigningKey, WorkloadTemplate, pem_certificate, request_p256_spki
from sailmesh.errors import CertificateError, IdentityError

log = logging.getLogger("sailmesh.ca")

# Istio's defaults: DEFAULT_WORKLOAD_CERT_TTL 24h, MAX_WORKLOAD_CERT_TTL 90 days,
# CITADEL_SELF_SIGNED_CA_CERT_TTL 10 years.
DEFAULT_TTL_S = 24 * 3600.0
MAX_TTL_S = 90 * 24 * 3600.0
ROOT_TTL_S = 10 * 365 * 24 * 3600.0
MIN_TTL_S = 60.0  # the floor the issue sets ("configurable down to a minute"); tests may lower it
BACKDATE = datetime.timedelta(minutes=1)  # tolerate a little clock skew between the CA and the peers
MIN_RSA_BITS = 2048
SHA256 = hashes.SHA256()

# Istio's plug-in CA files (samples/certs, `kubectl create secret generic cacerts`).
CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN = "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"
SELF_SIGNED_DIR = "ca"  # under the control plane's state dir: root-cert.pem and ca-key.pem (0600)
TRUST_BUNDLE = "trust-bundle.pem"  # there, during a root rotation: every root trusted (absent: root-cert.pem alone)



@dataclass(frozen=True)
class CaOptions:
    """Trust domain and certificate lifetimes."""

    trust_domain: str = "cluster.local"
    default_ttl_s: float = DEFAULT_TTL_S
    min_ttl_s: float = MIN_TTL_S
    max_ttl_s: float = MAX_TTL_S


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate and its chain, PEM: `chain[0]` is the leaf, `chain[-1]` the root."""

    chain: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def cert_pem(self) -> str:
        return self.chain[0]

    @property
    def root_pem(self) -> str:
        return self.chain[-1]


def pem(cert: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: SigningKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (for files that are 0600, or memory)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read: created 0600 (never world-readable, not even briefly), then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (CertificateError if it cannot be read)."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CertificateError(f"cannot read certificates from {path}: {e}") from e


def load_private_key(path: Path) -> SigningKey:
    """A CA key from a file only its owner may read."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0
    if mode & 0o077:
        raise CertificateError(f"{path} is readable by others (mode {mode:o}); it must be 0600")
    return _load_key(path)


def new_root_key() -> ec.EllipticCurvePrivateKey:
    """The key of a new self-signed root (ECDSA P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def _load_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CertificateError(f"cannot read the CA key {path}: {e}") from None  # never echo key material
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"{path}: the CA key must be ECDSA or RSA")
    return key


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined, no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def check_signer(cert: x509.Certificate, key: SigningKey) -> None:
    """CertificateError unless `key` is `cert`'s and `cert` is a CA (what a CA can sign with)."""
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise CertificateError("the CA key does not match the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError("the CA certificate is not a CA (basicConstraints CA:TRUE is missing)")


class CertificateAuthority:
    """Signs workload CSRs with one signing certificate; trusts `roots` (the trust bundle handed to proxies)."""

    def __init__(self, signing_cert: x509.Certificate, signing_key: SigningKey, intermediates: list[x509.Certificate],
                 roots: list[x509.Certificate], options: CaOptions | None = None) -> None:
        self.options = options or CaOptions()
        self.folder: Path | None = None  # the self-signed root's directory (root rotation works there only)
        self.use(signing_cert, signing_key, intermediates, roots)

    def use(self, signing_cert: x509.Certificate, signing_key: SigningKey, intermediates: list[x509.Certificate],
            roots: list[x509.Certificate]) -> None:
        """Sign with `signing_cert` from now on and trust `roots` (root rotation changes both, in steps)."""
        check_signer(signing_cert, signing_key)
        self.signing_cert = signing_cert
        self._key = signing_key
        self.intermediates = intermediates
        self.roots = roots
        # The response's last element is the whole trust bundle (as istiod's, whose root-cert bytes hold every
        # root during a rotation): the agent serves it as ROOTCA.
        bundle = self.trust_bundle()
        self._chain_tail = (*(pem(c) for c in intermediates), bundle)
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key())
        self._signing_not_after = signing_cert.not_valid_after_utc
        # Issuer and the extensions every workload certificate has, encoded once per signing certificate.
        fixed: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (self._aki, False),
        ]
        base = x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(signing_cert.subject)
        for value, critical in fixed:
            base = base.add_extension(value, critical=critical)
        self._workload_base = base
        template = WorkloadTemplate(signing_cert.subject, signing_key, fixed)
        self._template = template if template.matches(base, signing_key, signing_cert) else None
        if self._template is None:
            log.warning("the DER template does not reproduce the certificate builder's encoding for %s; signing "
                        "with the builder (slower)", signing_cert.subject.rfc4514_string())
        self.bundle_id = hashlib.sha256(bundle.encode()).hexdigest()[:16]  # names this exact bundle
        self.signing_id = signing_cert.fingerprint(hashes.SHA256()).hex()

    def trust(self, roots: list[x509.Certificate]) -> None:
        """Keep signing as now, trusting `roots` (the first step and the last of a root rotation)."""
        self.use(self.signing_cert, self._key, self.intermediates, roots)

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def self_signed(cls, state_dir: str | Path, options: CaOptions | None = None) -> CertificateAuthority:
        """Load the root from `<state_dir>/ca/`, creating it (key 0600) on first start."""
        options = options or CaOptions()
        folder = Path(state_dir) / SELF_SIGNED_DIR
        cert_path, key_path = folder / ROOT_CERT, folder / CA_KEY
        if cert_path.exists() and key_path.exists():
            root = load_certs(cert_path)[0]
            bundle = folder / TRUST_BUNDLE
            roots = load_certs(bundle) if bundle.exists() else [root]
            ca = cls(root, load_private_key(key_path), [], roots, options)
        else:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = new_root_key()
            root = root_certificate(key, options.trust_domain)
            write_private(key_path, key_pem(key))
            cert_path.write_text(pem(root))
            log.info("created a self-signed root CA for trust domain %s in %s", options.trust_domain, folder)
            ca = cls(root, key, [], [root], options)
        ca.folder = folder
        return ca

    @classmethod
    def plugin(cls, directory: str | Path, options: CaOptions | None = None) -> CertificateAuthority:
        """A CA from Istio's `cacerts` files: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem."""
        folder = Path(directory)
        missing = [n for n in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN) if not (folder / n).is_file()]
        if missing:
            raise CertificateError(f"plug-in CA {folder}: missing {', '.join(missing)} (Istio's cacerts layout)")
        signing = load_certs(folder / CA_CERT)[0]
        roots = load_certs(folder / ROOT_CERT)
        chain = load_certs(folder / CERT_CHAIN)
        root_ders = {r.fingerprint(hashes.SHA256()) for r in roots}
        # cert-chain.pem runs from ca-cert up to the root; keep the certificates between them.
        intermediates = [c for c in chain if c.fingerprint(hashes.SHA256()) not in root_ders and c != signing]
        path = [signing, *intermediates]
        for child, parent in zip(path, [*path[1:], None], strict=True):
            issuers = [parent] if parent is not None else roots
            if not any(issued_by(child, i) for i in issuers):
                raise CertificateError(f"plug-in CA {folder}: {child.subject.rfc4514_string()} does not chain to "
                                       f"{ROOT_CERT} through {CERT_CHAIN}")
        ca = cls(signing, _load_key(folder / CA_KEY), intermediates, roots, options)
        log.info("loaded the plug-in CA from %s (%s)", folder, signing.subject.rfc4514_string())
        return ca

    # -- the trust bundle -----------------------------------------------------------------------------------------
    def trust_bundle(self) -> str:
        """Every trusted root, PEM (ROOTCA; a new root joins here before anything is signed with it)."""
        return "".join(pem(r) for r in self.roots)

    # -- signing --------------------------------------------------------------------------------------------------
    def ttl(self, requested_s: float) -> float:
        """Istio's rule: 0 or less means the default; above the maximum is refused; below the floor is raised to it."""
        if requested_s <= 0:
            return self.options.default_ttl_s
        if requested_s > self.options.max_ttl_s:
            raise CertificateError(f"requested TTL {requested_s:.0f}s is greater than the max allowed TTL "
                                   f"{self.options.max_ttl_s:.0f}s")
        return max(requested_s, self.options.min_ttl_s)

    def sign_csr(self, csr_pem: str | bytes, identity: Identity, ttl_s: float = 0) -> IssuedCertificate:
        """Sign a PKCS#10 CSR for `identity` (the one the caller proved). IdentityError if the CSR asks for another."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
            public_key = csr.public_key()
            valid = signature_valid(csr, public_key)
        except (ValueError, InvalidSignature, TypeError, UnsupportedAlgorithm) as e:
            raise CertificateError(f"the CSR cannot be parsed: {e}") from None
        if not valid:
            raise CertificateError("the CSR's signature does not verify")
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1):
                raise CertificateError(f"unsupported ECDSA curve {public_key.curve.name} (P-256 or P-384)")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < MIN_RSA_BITS:
                raise CertificateError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {public_key.key_size}")
        else:
            raise CertificateError("unsupported key type (ECDSA P-256 or RSA 2048+)")
        uri = identity.uri
        try:
            asked = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            asked = None
        if asked is not None:
            others = [str(n.value) for n in asked if not (isinstance(n, x509.UniformResourceIdentifier)
                                                          and n.value == uri)]
            if others:
                raise IdentityError(f"the CSR asks for {', '.join(others)}; the caller proved {uri}")
        now = datetime.datetime.now(datetime.UTC)
        not_before = now - BACKDATE
        not_after = min(now + datetime.timedelta(seconds=self.ttl(ttl_s)), self._signing_not_after)
        serial = x509.random_serial_number()
        if self._template is not None and uri.isascii():
            spki = request_p256_spki(csr.tbs_certrequest_bytes)  # the key as the CSR carries it: no re-encoding
            leaf = pem_certificate(self._template.sign(serial, not_before, not_after, public_key, uri, spki))
        else:
            leaf = pem(
                self._workload_base
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                # The subject is empty, so the SAN is critical (RFC 5280 4.2.1.6), as in Istio's workload certificates.
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
                .sign(self._key, SHA256))
        return IssuedCertificate((leaf, *self._chain_tail), not_before, not_after)

    def issue_server(self, dns_names: list[str], ips: list[str], ttl_s: float = 0) -> tuple[IssuedCertificate, bytes]:
        """A serving certificate with a fresh key for the control plane itself (istiod.istio-system.svc, ...)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(now + datetime.timedelta(seconds=self.ttl(ttl_s)), self.signing_cert.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.signing_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(self._aki, critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate((pem(cert), *self._chain_tail), now - BACKDATE, not_after), key_pem(key)


# The CSR signature algorithms verified with the key already loaded; any other goes to is_signature_valid.
_ECDSA = {SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
          SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
          SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512())}
_RSA_PKCS1 = {SignatureAlgorithmOID.RSA_WITH_SHA256: hashes.SHA256(), SignatureAlgorithmOID.RSA_WITH_SHA384:
              hashes.SHA384(), SignatureAlgorithmOID.RSA_WITH_SHA512: hashes.SHA512()}
_PKCS1 = padding.PKCS1v15()


def signature_valid(csr: x509.CertificateSigningRequest, public_key: object) -> bool:
    """The CSR's proof of possession, as `csr.is_signature_valid` checks it, with its key already loaded (the
    property loads the key again: a second public-key parse per CSR)."""
    algorithm = csr.signature_algorithm_oid
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm in _ECDSA:
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, _ECDSA[algorithm])
        elif isinstance(public_key, rsa.RSAPublicKey) and algorithm in _RSA_PKCS1:
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, _PKCS1, _RSA_PKCS1[algorithm])
        else:
            return csr.is_signature_valid
    except InvalidSignature:
        return False
    return True


def issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `child` (names and signature)."""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def root_certificate(key: ec.EllipticCurvePrivateKey, trust_domain: str) -> x509.Certificate:
    """Istio's self-signed root: O=<trust domain>, CA:TRUE, certSign+crlSign, 10 years."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(seconds=ROOT_TTL_S))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
