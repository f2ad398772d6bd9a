"""Control-plane replicas on one API server share one CA, as istiod's replicas do (issue 14): the self-signed root
lives in the Secret `istio-ca-secret` (type istio.io/ca-root; ca-cert.pem, ca-key.pem, and cert-chain.pem,
key.pem, root-cert.pem empty) in the root namespace, created by whichever replica gets there first (the other
reads it), and a plug-in `cacerts` Secret takes precedence (Istio's "plug in CA certificates" task).

Proof as a workload sees it: a certificate replica A issues (for a projected service-account token) verifies
against replica B's trust bundle, and B's xDS port (mutual TLS) accepts it as a client certificate. Each test uses
its own root namespace, so the cluster's istio-system is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import pathlib
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from sailmesh.agent.identity import WorkloadCertificate
from sailmesh.ca.authority import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, key_pem, new_root_key, pem, root_certificate
from sailmesh.controlplane.app import ControlPlane
from sailmesh.platform.kube.carotation import FollowTimings
from sailmesh.settings import MeshDefaults, Settings
from sailmesh.testing.kube_cluster import KubeCluster
from tests.e2e import kube_support as ks
from tests.e2e.test_kube_identity import manager, token_file

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)
NS = "kt-ca-apps"


@contextlib.asynccontextmanager
async def replicas(kube: KubeCluster, tmp: pathlib.Path, root_namespace: str, count: int,
                   ca_timings: FollowTimings | None = None, **opts: object) -> AsyncIterator[list[ControlPlane]]:
    """`count` control planes on the cluster, started at the same time (each its own state dir; `opts` are more
    ControlPlaneOptions, `ca_timings` how they follow a root rotated in istio-ca-secret)."""
    cps = [ControlPlane(ks.options(kube, tmp / f"cp{i}", leader_lease_s=3.0, **opts), Settings(mesh=MeshDefaults(
        root_namespace=root_namespace))) for i in range(count)]
    for cp in cps:
        if ca_timings is not None and cp.kube is not None:
            cp.kube.ca_timings = ca_timings
    try:
        await asyncio.gather(*(cp.start() for cp in cps))
        yield cps
    finally:
        for cp in cps:
            await cp.stop()


async def secret(kube: KubeCluster, namespace: str, name: str) -> dict[str, object]:
    return dict(json.loads(await ks.kubectl(kube, "get", "secret", name, "-n", namespace, "-o", "json")))


def bundle(cp: ControlPlane) -> list[x509.Certificate]:
    assert cp.identity is not None
    return x509.load_pem_x509_certificates(cp.identity.root_cert_path.read_bytes())


def verifies(cert: WorkloadCertificate, roots: list[x509.Certificate]) -> bool:
    """The leaf chains (through any intermediates in its chain) to one of `roots`."""
    chain = x509.load_pem_x509_certificates(cert.chain_pem)
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def handshake(port: int, cert: WorkloadCertificate, folder: pathlib.Path) -> str:
    """A TLS handshake to 127.0.0.1:port presenting `cert` (ALPN h2, as gRPC): the server's leaf subject."""
    (folder / "c.pem").write_bytes(cert.chain_pem)
    (folder / "k.pem").write_bytes(cert.key_pem)
    (folder / "k.pem").chmod(0o600)
    ctx = ssl.create_default_context(cadata=cert.roots_pem.decode())
    ctx.check_hostname = False
    ctx.load_cert_chain(folder / "c.pem", folder / "k.pem")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as tls:
        tls.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the server verified the client certificate by now
        return str(tls.version())


async def workload_token(kube: KubeCluster, tmp: pathlib.Path) -> str:
    await ks.kubectl(kube, "create", "namespace", NS, check=False)
    await ks.kubectl(kube, "create", "serviceaccount", "reviews", "-n", NS, check=False)
    await ks.wait_service_account(kube, NS, "reviews")
    token = (await ks.kubectl(kube, "create", "token", "reviews", "-n", NS, "--audience", "istio-ca")).strip()
    return token_file(tmp, "istio-token", token)


@pytest.mark.timeout(600)
async def test_two_replicas_share_one_root_from_istio_ca_secret(kube: KubeCluster, tmp_path: pathlib.Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sailmesh")
    root_ns = "kt-ca"
    await ks.kubectl(kube, "create", "namespace", root_ns)
    token = await workload_token(kube, tmp_path)
    # both start at once: both find no Secret, one create wins, the other gets 409 and reads the winner's
    async with replicas(kube, tmp_path / "ab", root_ns, 2) as [a, b]:
        assert caplog.text.count("CA: created the self-signed root") == 1
        assert caplog.text.count("CA: the self-signed root from Secret") == 1
        got = await secret(kube, root_ns, "istio-ca-secret")
        assert got["type"] == "istio.io/ca-root"
        data = got["data"]
        assert isinstance(data, dict)
        assert set(data) == {CA_CERT, CA_KEY, CERT_CHAIN, "key.pem", ROOT_CERT}
        stored = x509.load_pem_x509_certificate(base64.b64decode(data[CA_CERT]))
        assert bundle(a) == bundle(b) == [stored], "one trust root for both replicas, the Secret's"

        cert = await manager(a, token, NS, "reviews").fetch()  # issued by replica A
        assert verifies(cert, bundle(b))
        assert b.opts.xds_tls_port != a.opts.xds_tls_port
        version = await asyncio.to_thread(handshake, b.opts.xds_tls_port, cert, tmp_path)
        assert version.startswith("TLSv1.")  # replica B's mutual-TLS xDS port accepts A's workload certificate

    # a replica started later (a restart, a scale-up) reads the same root; nothing is created again
    async with replicas(kube, tmp_path / "c", root_ns, 1) as [c]:
        assert bundle(c) == [stored]
    assert await secret(kube, root_ns, "istio-ca-secret") == got


@pytest.mark.timeout(600)
async def test_a_plugged_in_cacerts_secret_takes_precedence(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    root_ns = "kt-ca-plug"
    await ks.kubectl(kube, "create", "namespace", root_ns)
    key = new_root_key()
    root = root_certificate(key, "cluster.local")
    folder = tmp_path / "cacerts"
    folder.mkdir()
    for name, text in ((CA_CERT, pem(root)), (CA_KEY, key_pem(key).decode()), (ROOT_CERT, pem(root)),
                       (CERT_CHAIN, pem(root))):
        (folder / name).write_text(text)
    await ks.kubectl(kube, "create", "secret", "generic", "cacerts", "-n", root_ns,
                     *[f"--from-file={folder / n}" for n in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)])
    token = await workload_token(kube, tmp_path)
    async with replicas(kube, tmp_path / "ab", root_ns, 2) as [a, b]:
        assert bundle(a) == bundle(b) == [root]
        cert = await manager(a, token, NS, "reviews").fetch()
        assert verifies(cert, bundle(b)) and verifies(cert, [root])
    got = await ks.kubectl(kube, "get", "secret", "istio-ca-secret", "-n", root_ns, check=False)
    assert not got.strip(), "with a plug-in CA no self-signed root is made"
