"""The agent's certificate manager against a real control plane (in process, real gRPC and TLS): the first CSR with
the join token, renewals with the current certificate on the mTLS port (so the token may expire), a renewal as
soon as the published trust bundle changes, and the token again when the certificate path is refused."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography import x509

from sailmesh.agent.identity import CertificateManager, IdentityOptions
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.errors import AuthenticationError
from sailmesh.processes import free_port
from sailmesh.settings import Settings


@pytest.fixture
async def cp():
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(), state_dir=state),
                         Settings())
    await plane.start()
    yield plane
    await plane.stop()
    shutil.rmtree(state, ignore_errors=True)


async def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_renewals_use_the_certificate_and_follow_the_bundle(cp: ControlPlane, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO)
    assert cp.identity is not None
    token_file = tmp_path / "join-token"
    token_file.touch(mode=0o600)
    token = cp.identity.tokens.issue("foo", "sleep", ttl_s=5)  # long enough for the first CSR on a loaded machine
    token_file.write_text(token)
    bundle = tmp_path / "root-cert.pem"  # the published bundle the agent watches (a copy the test can change)
    bundle.write_text(cp.identity.root_cert_path.read_text())
    certs = CertificateManager(IdentityOptions(
        ca_address=f"127.0.0.1:{cp.opts.ca_port}", ca_root_file=str(bundle), token_file=str(token_file),
        trust_domain="cluster.local", namespace="foo", service_account="sleep", ttl_s=3600, instance="foo/sleep-0",
        renew_address=f"127.0.0.1:{cp.opts.xds_tls_port}"))
    seen = []
    certs.on_change(seen.append)
    certs.start()
    try:
        await wait_until(lambda: len(seen) == 1)
        while True:  # until the join token has expired
            try:
                cp.identity.tokens.authenticate(token)
            except AuthenticationError:
                break
            await asyncio.sleep(0.2)
        bundle.write_text(bundle.read_text() + "\n")  # the published bundle changed: renew now, not in 30 min
        await wait_until(lambda: len(seen) == 2)
        assert seen[1].serial != seen[0].serial and certs.rotations == 1
        assert "trying the join token" not in caplog.text  # renewed with the certificate on the mTLS port
        assert (await cp.rotate_root("status"))["instances"] == 1  # the CA knows this instance holds the bundle
        # revoked: the certificate no longer renews, and the expired token does not either
        await asyncio.sleep(1.1)
        cp.identity.tokens.revoke("foo", "sleep")
        certs.bundle_changed.set()
        await wait_until(lambda: "renewal of spiffe://cluster.local/ns/foo/sa/sleep with its certificate failed"
                         in caplog.text)
        await wait_until(lambda: "expired join token" in caplog.text or "unknown or revoked" in caplog.text)
        assert len(seen) == 2
    finally:
        await certs.stop()


async def test_a_token_file_readable_by_others_is_used_as_istios_agent_uses_it(cp: ControlPlane, tmp_path: Path,
                                                                              caplog):
    # Kubernetes projects service-account tokens with the volume's defaultMode, 0644 unless set (the API reference
    # of ProjectedVolumeSource); Istio's agent reads the file without a mode check: so does ours (noted in the log)
    caplog.set_level(logging.INFO)
    assert cp.identity is not None
    token_file = tmp_path / "istio-token"
    token_file.write_text(cp.identity.tokens.issue("foo", "sleep"))
    token_file.chmod(0o644)
    certs = CertificateManager(IdentityOptions(
        ca_address=f"127.0.0.1:{cp.opts.ca_port}", ca_root_file=str(cp.identity.root_cert_path),
        token_file=str(token_file), trust_domain="cluster.local", namespace="foo", service_account="sleep"))
    cert = await certs.fetch()
    leaf = x509.load_pem_x509_certificate(cert.chain_pem)
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/foo/sa/sleep"]
    assert "readable by group/others (mode 644)" in caplog.text
    assert token_file.read_text() not in caplog.text  # the token itself is never logged
