"""Root rotation of the self-signed CA: add (trusted, not signing), switch (signing, old still trusted), drop; each
step refused while a live workload has not followed the previous one, and the state survives a restart."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from sailmesh.ca.authority import CertificateAuthority, new_root_key, root_certificate
from sailmesh.ca.rotation import RootRotation
from sailmesh.ca.service import CertificateService
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import CertificateError
from tests.unit.test_ca import csr_for

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"


def roots_of(bundle: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle.encode())


def signed_by(chain: list[str], root: x509.Certificate) -> bool:
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@pytest.fixture
def setup(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    rotation = RootRotation(ca)
    tokens = JoinTokens()
    service = CertificateService(ca, tokens, holders=rotation.holders)
    token = tokens.issue("foo", "sleep")

    def renew(instance: str) -> list[str]:
        return service.create(csr_for(SLEEP), 3600, token, [], instance)

    return tmp_path, ca, rotation, renew


def test_steps_in_order_each_waiting_for_the_live_workloads(setup):
    _, ca, rotation, renew = setup
    old = ca.roots[0]
    renew("foo/sleep-0")
    renew("foo/sleep-1")
    with pytest.raises(CertificateError, match=r"next step .* is 'add'"):
        rotation.step("switch")

    status = rotation.step("add")
    assert status["phase"] == "switch" and len(status["roots"]) == 2
    new = roots_of(ca.trust_bundle())[1]
    assert ca.signing_cert == old  # trusted, not signing
    assert status["withoutBundle"] == ["foo/sleep-0", "foo/sleep-1"]
    with pytest.raises(CertificateError, match=r"2 live workload.*do not hold the new trust bundle"):
        rotation.step("switch")
    chain = renew("foo/sleep-0")
    assert roots_of(chain[-1]) == [old, new]  # the response carries the whole bundle (ROOTCA)
    assert signed_by(chain, old)
    renew("foo/sleep-1")
    assert rotation.status()["withoutBundle"] == []

    status = rotation.step("switch")
    assert ca.signing_cert == new and status["phase"] == "drop"
    assert status["onOldRoot"] == ["foo/sleep-0", "foo/sleep-1"]
    with pytest.raises(CertificateError, match="still hold a certificate of an old root"):
        rotation.step("drop")
    chain = renew("foo/sleep-0")
    assert signed_by(chain, new) and roots_of(chain[-1]) == [new, old]
    rotation.step("drop", force=True)  # sleep-1 is left behind on purpose: force takes the step anyway
    assert ca.roots == [new] and roots_of(renew("foo/sleep-0")[-1]) == [new]
    assert rotation.status()["phase"] == "add"


def test_a_restart_resumes_the_rotation_where_it_was(setup):
    tmp_path, ca, rotation, _ = setup
    rotation.step("add")
    again = CertificateAuthority.self_signed(tmp_path)
    assert again.roots == ca.roots and again.signing_cert == ca.signing_cert
    resumed = RootRotation(again)
    assert resumed.status()["phase"] == "switch"
    resumed.step("switch")
    third = CertificateAuthority.self_signed(tmp_path)
    assert third.signing_cert == again.signing_cert != ca.signing_cert and len(third.roots) == 2
    assert (tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o077 == 0
    RootRotation(third).step("drop")
    assert CertificateAuthority.self_signed(tmp_path).roots == [third.signing_cert]


def test_a_plugin_ca_is_not_rotated_here(tmp_path):
    from tests.unit.test_ca import _make_plugin

    _make_plugin(tmp_path / "cacerts")
    rotation = RootRotation(CertificateAuthority.plugin(tmp_path / "cacerts"))
    with pytest.raises(CertificateError, match="plug-in CA"):
        rotation.step("add")


def test_an_agent_that_does_not_name_itself_is_not_counted(setup):
    _, _, rotation, renew = setup
    renew("")
    assert rotation.status()["instances"] == 0


def test_a_root_chosen_elsewhere_is_followed_trusted_first_then_signing_then_alone(setup):
    # a shared CA (replicas reading istio-ca-secret): the root comes from the Secret, not from `add`
    _, ca, rotation, renew = setup
    old = ca.roots[0]
    key = new_root_key()
    new = root_certificate(key, "cluster.local")
    kept = root_certificate(new_root_key(), "cluster.local")  # a root the Secret's root-cert.pem lists
    rotation.follow(new, key, [kept])
    assert rotation.pending == new and ca.signing_cert == old  # trusted, not signing
    assert ca.roots == [old, new, kept]
    assert signed_by(renew("foo/sleep-0"), old)
    rotation.promote()
    assert rotation.pending is None and ca.signing_cert == new
    assert ca.roots == [new, old, kept]  # the signing root first; the old one still trusted
    assert signed_by(renew("foo/sleep-0"), new)
    assert rotation.drop_old([kept]) == [old]
    assert ca.roots == [new, kept]
    with pytest.raises(CertificateError, match="no followed root"):
        rotation.promote()


def test_a_followed_root_must_be_a_ca_with_its_own_key(setup):
    _, ca, rotation, _ = setup
    before = list(ca.roots)
    with pytest.raises(CertificateError, match="does not match"):
        rotation.follow(root_certificate(new_root_key(), "cluster.local"), new_root_key())
    assert ca.roots == before and rotation.pending is None
