"""Root rotation with control-plane replicas sharing `istio-ca-secret` (issue 14, the security issue's rotation
rule): when an operator puts a new root into the Secret, every replica trusts it first (its published bundle and
every CSR answer carry it), signs with it only once the bundle is out (its live workloads hold it; the root
namespace's istio-ca-root-cert, when there is one, carries it), and drops the old root once no live workload of
it holds an old-root certificate (platform/kube/carotation.py, reusing ca/rotation.py's steps).

Proof on the real kube-apiserver with two replicas: the steps each replica takes and their order, what a workload's
certificates chain to at each point, and that certificates of either root verify against the other replica's
bundle while both are trusted. Timings are shortened (settle 1 s); the old root's drop is held back (an hour, the
default) until the test has looked at both roots being trusted, then allowed at once.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import pathlib
from collections.abc import Callable

import pytest
from cryptography import x509

from sailmesh.agent.identity import CertificateManager, IdentityOptions, WorkloadCertificate
from sailmesh.ca.authority import CA_CERT, CA_KEY, key_pem, new_root_key, pem, root_certificate
from sailmesh.ca.rotation import fingerprint
from sailmesh.controlplane.app import ControlPlane
from sailmesh.platform.kube.carotation import FollowTimings
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e import kube_support as ks
from tests.e2e.test_kube_shared_ca import NS, bundle, replicas, secret, verifies, workload_token

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)
FAST = FollowTimings(settle_s=1.0, check_s=0.2, switch_max_s=120.0, drop_after_s=3600.0)


def workload(cp: ControlPlane, token: str, instance: str) -> CertificateManager:
    """An agent's certificate manager naming its instance (the rotation's bookkeeping of who holds what)."""
    assert cp.identity is not None
    return CertificateManager(IdentityOptions(
        ca_address=f"127.0.0.1:{cp.opts.ca_port}", ca_root_file=str(cp.identity.root_cert_path), token_file=token,
        trust_domain="cluster.local", namespace=NS, service_account="reviews", instance=instance))


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll a synchronous condition on the event loop (the replicas run on it) with a deadline."""
    async def once() -> bool:
        return check()
    await await_for(once, timeout=30, interval=0.1, what=what)


async def published(kube: KubeCluster, namespace: str) -> list[x509.Certificate]:
    """The roots in the namespace's istio-ca-root-cert (what injected proxies mount)."""
    text = await ks.kubectl(kube, "get", "configmap", "istio-ca-root-cert", "-n", namespace, "-o",
                            "jsonpath={.data.root-cert\\.pem}")
    return x509.load_pem_x509_certificates(text.encode()) if text.strip() else []


def steps(cp: ControlPlane) -> list[tuple[str, str]]:
    assert cp.kube is not None and cp.kube.ca_follower is not None
    return cp.kube.ca_follower.steps


def issuer(cert: WorkloadCertificate, roots: list[x509.Certificate]) -> x509.Certificate:
    """The one of `roots` the certificate chains to."""
    found = [r for r in roots if verifies(cert, [r])]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.timeout(600)
async def test_replicas_trust_a_rotated_root_before_signing_with_it_then_drop_the_old_one(
        kube: KubeCluster, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sailmesh")
    root_ns = "kt-rot"
    await ks.kubectl(kube, "create", "namespace", root_ns)
    token = await workload_token(kube, tmp_path)
    # webhooks on: the Lease holder publishes the bundle in istio-ca-root-cert, which the replicas wait for
    async with replicas(kube, tmp_path / "ab", root_ns, 2, FAST, webhook_port=0) as [a, b]:
        [old] = bundle(a)
        assert bundle(b) == [old]
        agent = workload(a, token, f"{NS}/reviews-1")
        first = await agent.fetch()  # a live workload of replica A, on the old root
        assert verifies(first, [old])

        # the operator rotates: a new root and key in istio-ca-secret (root-cert.pem stays empty, istiod's layout)
        key = new_root_key()
        new = root_certificate(key, "cluster.local")
        patch = {CA_CERT: base64.b64encode(pem(new).encode()).decode(),
                 CA_KEY: base64.b64encode(key_pem(key)).decode()}
        await ks.kubectl(kube, "patch", "secret", "istio-ca-secret", "-n", root_ns, "--type", "merge",
                         "-p", '{"data": ' + str(patch).replace("'", '"') + "}")

        # step 1 on both replicas: the new root is trusted (published bundle), the old one still signs
        await until(lambda: new in bundle(a) and new in bundle(b), "both replicas trust the new root")
        assert bundle(a) == bundle(b) == [old, new]
        assert steps(a)[:1] == steps(b)[:1] == [("trust", fingerprint(new))]
        # replica B has no live workload: it signs with the new root once settled (its bundle is out)
        await until(lambda: len(steps(b)) >= 2, "replica B signs with the new root")
        assert steps(b)[1] == ("sign", fingerprint(new))
        # ... which needed the Lease holder to have published the new root in istio-ca-root-cert first
        assert new in await published(kube, root_ns)
        # replica A waits for its workload, which holds the old bundle: still signing with the old root
        await asyncio.sleep(FAST.settle_s + 5 * FAST.check_s)
        assert steps(a) == [("trust", fingerprint(new))]
        assert a.identity is not None
        assert a.identity.rotation.status()["withoutBundle"] == [f"{NS}/reviews-1"]
        # the workload renews (as an agent does when the published bundle changes): it gets the bundle with both
        # roots, and still a certificate of the old root - A has not switched yet
        second = await agent.fetch()
        assert x509.load_pem_x509_certificates(second.roots_pem) == [old, new]
        assert issuer(second, [old, new]) == old
        # now every live workload of A holds the new bundle: A signs with the new root
        await until(lambda: len(steps(a)) >= 2, "replica A signs with the new root")
        assert steps(a)[1] == ("sign", fingerprint(new))
        third = await agent.fetch()
        assert issuer(third, [old, new]) == new
        # both roots trusted by both replicas meanwhile: certificates of either verify against the other's bundle
        assert verifies(third, bundle(b)) and verifies(second, bundle(b))
        from_b = await workload(b, token, f"{NS}/reviews-2").fetch()
        assert issuer(from_b, [old, new]) == new and verifies(from_b, bundle(a))

        assert bundle(a) == bundle(b) == [new, old]  # the signing root first (agents renew onto it)

        # step 3: the hour's wait shortened to nothing; once no live workload holds an old-root certificate, the
        # old root leaves the bundle
        for cp in (a, b):
            assert cp.kube is not None and cp.kube.ca_follower is not None
            cp.kube.ca_follower.timings = dataclasses.replace(FAST, drop_after_s=0.0)
        await until(lambda: bundle(a) == [new] and bundle(b) == [new], "the old root dropped")
        assert steps(a) == steps(b) == [("trust", fingerprint(new)), ("sign", fingerprint(new)),
                                        ("drop", fingerprint(new))]
        assert x509.load_pem_x509_certificates((await agent.fetch()).roots_pem) == [new]

        async def only_new_published() -> bool:
            return await published(kube, root_ns) == [new]
        await await_for(only_new_published, timeout=30, interval=0.5, what="istio-ca-root-cert holds the new root")
        assert "PRIVATE KEY" not in caplog.text  # no key material logged
    # the Secret is the operator's: no replica rewrote it
    data = (await secret(kube, root_ns, "istio-ca-secret"))["data"]
    assert isinstance(data, dict) and data[CA_CERT] == patch[CA_CERT]


@pytest.mark.timeout(300)
async def test_a_replicas_rotate_root_writes_a_new_root_into_the_secret_that_every_replica_follows(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """`sailmesh x ca rotate-root` on one replica (the API's `add` step): it writes a new self-signed root and its
    key into istio-ca-secret, and every replica, this one too, then takes trust, sign and drop from its watch as
    for an operator's change; a second rotation while this one is under way is refused, and so are one-replica
    `switch`/`drop` steps. (Before: every phase but `status` was refused.)"""
    from sailmesh.errors import CertificateError

    root_ns = "kt-rot2"
    await ks.kubectl(kube, "create", "namespace", root_ns)
    async with replicas(kube, tmp_path / "cd", root_ns, 2, FAST) as [c, d]:
        [old] = bundle(c)
        out = await c.rotate_root("add")
        assert out["shared"] is True
        data = (await secret(kube, root_ns, "istio-ca-secret"))["data"]
        assert isinstance(data, dict)
        [new] = x509.load_pem_x509_certificates(base64.b64decode(data[CA_CERT]))
        assert fingerprint(new) == out["written"] and new != old
        await until(lambda: steps(c)[:1] == steps(d)[:1] == [("trust", fingerprint(new))],
                    "both replicas trust the written root")
        assert bundle(c) == bundle(d) == [old, new]
        for replica in (c, d):
            with pytest.raises(CertificateError, match=r"under way|taken up"):
                await replica.rotate_root("add")
            with pytest.raises(CertificateError, match="takes the 'switch' step itself"):
                await replica.rotate_root("switch")
        # no live workloads and no istio-ca-root-cert here: both sign with the new root once settled, then drop
        for cp in (c, d):
            assert cp.kube is not None and cp.kube.ca_follower is not None
            cp.kube.ca_follower.timings = dataclasses.replace(FAST, drop_after_s=0.0)
        await until(lambda: bundle(c) == bundle(d) == [new], "both replicas on the new root alone")
        assert steps(c) == steps(d) == [("trust", fingerprint(new)), ("sign", fingerprint(new)),
                                        ("drop", fingerprint(new))]
        assert c.identity is not None and c.identity.authority.signing_cert == new
        # the rotation is over: the next one may start (from any replica)
        again = await d.rotate_root("add")
        assert again["written"] != out["written"]
        await until(lambda: len(steps(c)) == 4 and steps(c)[3] == ("trust", again["written"]),
                    "the next rotation followed")
