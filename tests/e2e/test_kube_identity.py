"""Service-account identity against the real kube-apiserver: a projected token (audience istio-ca), minted with
`kubectl create token`, is checked by the control plane's CA with the TokenReview API and gets a certificate for
exactly the namespace/service account the review returns (issue 14; Istio's KubeJWTAuthenticator)."""

from __future__ import annotations

import logging
import os
import pathlib

import grpc
import pytest
from cryptography import x509

from sailmesh.agent.identity import CertificateManager, IdentityOptions
from sailmesh.controlplane.app import ControlPlane
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e.kube_support import control_plane, kubectl, module_cluster, wait_service_account

pytestmark = pytest.mark.e2e
NS = "kt-id"


kube = pytest.fixture(scope="module", name="kube")(module_cluster)


def token_file(folder: pathlib.Path, name: str, token: str) -> str:
    path = folder / name
    path.write_text(token)
    os.chmod(path, 0o600)  # as the agent insists for its credential
    return str(path)


def manager(cp: ControlPlane, token_path: str, namespace: str, service_account: str) -> CertificateManager:
    assert cp.identity is not None
    return CertificateManager(IdentityOptions(
        ca_address=f"127.0.0.1:{cp.opts.ca_port}", ca_root_file=str(cp.identity.root_cert_path),
        token_file=token_path, trust_domain="cluster.local", namespace=namespace, service_account=service_account))


def uris(chain_pem: bytes) -> list[str]:
    leaf = x509.load_pem_x509_certificate(chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


async def refused(cp: ControlPlane, token_path: str, namespace: str, service_account: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await manager(cp, token_path, namespace, service_account).fetch()
    return err.value.code()


async def test_a_service_account_token_gets_its_own_identity_and_nothing_else(
        kube: KubeCluster, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sailmesh")
    await kubectl(kube, "create", "namespace", NS)
    await kubectl(kube, "create", "serviceaccount", "reviews", "-n", NS)
    await wait_service_account(kube, NS, "reviews")
    istio_ca = (await kubectl(kube, "create", "token", "reviews", "-n", NS, "--audience", "istio-ca")).strip()
    other_aud = (await kubectl(kube, "create", "token", "reviews", "-n", NS, "--audience", "vault")).strip()
    async with control_plane(kube, tmp_path / "cp") as cp:
        good = token_file(tmp_path, "istio-token", istio_ca)
        cert = await manager(cp, good, NS, "reviews").fetch()
        assert uris(cert.chain_pem) == [f"spiffe://cluster.local/ns/{NS}/sa/reviews"]

        # the CSR asks for another service account (or namespace) than the token proves: refused
        assert await refused(cp, good, NS, "ratings") == grpc.StatusCode.PERMISSION_DENIED
        assert await refused(cp, good, "default", "reviews") == grpc.StatusCode.PERMISSION_DENIED
        # a token for another audience, a malformed token: the TokenReview does not authenticate them
        assert await refused(cp, token_file(tmp_path, "vault", other_aud), NS, "reviews") == \
            grpc.StatusCode.UNAUTHENTICATED
        garbage = "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"
        assert await refused(cp, token_file(tmp_path, "garbage", garbage), NS, "reviews") == \
            grpc.StatusCode.UNAUTHENTICATED

        # the join-token path stays beside it
        join = cp.issue_join_token(NS, "details")
        cert = await manager(cp, token_file(tmp_path, "join", join), NS, "details").fetch()
        assert uris(cert.chain_pem) == [f"spiffe://cluster.local/ns/{NS}/sa/details"]

        # the service account deleted: its tokens no longer pass the review (once the API server's service
        # account cache has seen the deletion)
        await kubectl(kube, "delete", "serviceaccount", "reviews", "-n", NS)

        async def review_refuses() -> bool:
            try:
                await manager(cp, good, NS, "reviews").fetch()
            except grpc.aio.AioRpcError as e:
                return e.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        await await_for(review_refuses, timeout=30, interval=0.5, what="the deleted account's token refused")

    logged = caplog.text
    assert "CSR refused (unauthenticated)" in logged and "CSR refused (permission denied)" in logged
    for secret in (istio_ca, other_aud, garbage, join):  # refusals are logged without the token
        assert secret not in logged


async def test_the_admin_identity_cannot_be_proved_with_a_service_account_token(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """The control plane's API admin identity (istio-system/sailmesh-admin) is reserved: a Kubernetes service
    account of that name gets no certificate, as no join token can be issued for it."""
    await kubectl(kube, "create", "namespace", "istio-system", check=False)
    await kubectl(kube, "create", "serviceaccount", "sailmesh-admin", "-n", "istio-system")
    await wait_service_account(kube, "istio-system", "sailmesh-admin")
    token = (await kubectl(kube, "create", "token", "sailmesh-admin", "-n", "istio-system",
                           "--audience", "istio-ca")).strip()
    async with control_plane(kube, tmp_path / "cp") as cp:
        path = token_file(tmp_path, "admin", token)
        assert await refused(cp, path, "istio-system", "sailmesh-admin") == grpc.StatusCode.UNAUTHENTICATED
