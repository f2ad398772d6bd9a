"""TokenReview results -> the identity the CA signs for (Istio's ValidateK8sJwt rules), and the CA's platform-token
path: a verifier's identity is signed, a reserved one is not, join tokens bypass the verifier."""

from __future__ import annotations

import pytest

from sailmesh.agent.identity import make_csr
from sailmesh.ca.authority import CertificateAuthority
from sailmesh.ca.service import CertificateService
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import AuthenticationError
from sailmesh.platform.kube.tokenreview import service_account_of

AUD = ("istio-ca",)


def test_an_authenticated_service_account_gives_its_namespace_and_name() -> None:
    status = {"authenticated": True, "audiences": ["istio-ca"],
              "user": {"username": "system:serviceaccount:bookinfo:bookinfo-reviews", "uid": "x"}}
    assert service_account_of(status, AUD) == ("bookinfo", "bookinfo-reviews")


@pytest.mark.parametrize("status, reason", [
    ({"authenticated": False, "error": "invalid bearer token"}, "not authenticated: invalid bearer token"),
    ({}, "not authenticated"),
    ({"authenticated": True, "audiences": ["vault"], "user": {"username": "system:serviceaccount:a:b"}},
     "audiences"),
    ({"authenticated": True, "user": {"username": "jane@example.com"}}, "not a service account"),
    ({"authenticated": True, "user": {"username": "system:serviceaccount:a"}}, "invalid username"),
    ({"authenticated": True, "user": {"username": "system:serviceaccount:a:b:c"}}, "invalid username"),
])
def test_anything_else_is_refused(status: dict[str, object], reason: str) -> None:
    with pytest.raises(AuthenticationError, match=reason):
        service_account_of(status, AUD)


class FakeVerifier:
    def __init__(self, answer: tuple[str, str]) -> None:
        self.answer = answer
        self.seen: list[str] = []

    async def verify(self, token: str) -> tuple[str, str]:
        self.seen.append(token)
        return self.answer


async def test_the_ca_signs_what_the_verifier_proves_and_skips_it_for_join_tokens(tmp_path) -> None:
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens()
    svc = CertificateService(ca, tokens)
    assert await svc.platform_identity("eyJ.x.y") is None  # no verifier: the join-token path only
    svc.token_verifier = FakeVerifier(("foo", "sleep"))
    proved = await svc.platform_identity("eyJ.x.y")
    assert proved is not None and proved.uri == "spiffe://cluster.local/ns/foo/sa/sleep"
    csr, _ = make_csr(proved.uri)
    assert len(svc.create(csr.decode(), 3600, "eyJ.x.y", [], proved=proved)) >= 2
    join = tokens.issue("foo", "details")
    assert await svc.platform_identity(join) is None  # a join token never goes to the verifier
    assert svc.token_verifier.seen == ["eyJ.x.y"]  # type: ignore[attr-defined]


async def test_a_reserved_identity_is_refused_whatever_the_verifier_says(tmp_path) -> None:
    svc = CertificateService(CertificateAuthority.self_signed(tmp_path), JoinTokens())
    svc.tokens.reserved.add(("istio-system", "sailmesh-admin"))
    svc.token_verifier = FakeVerifier(("istio-system", "sailmesh-admin"))
    with pytest.raises(AuthenticationError, match="reserved"):
        await svc.platform_identity("eyJ.x.y")
