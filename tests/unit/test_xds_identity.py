"""xDS on the TLS port is bound to the proxy's certificate (Istio's checkConnectionIdentity): the node's namespace
and service account must be those of the SPIFFE ID in its client certificate, or the stream is refused with
PERMISSION_DENIED and gets no config. Plaintext ADS is off unless asked for, and then only on loopback."""

from __future__ import annotations

import logging
import shutil
import tempfile

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sailmesh.api.identity import Identity
from sailmesh.ca.authority import key_pem
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import free_port
from sailmesh.settings import Settings
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.waiting import await_for
from sailmesh.xds.types import CLUSTER
from tests.unit.test_ca import csr_for

SLEEP = Identity("cluster.local", "foo", "sleep")


@pytest.fixture
async def cp():
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_port=0, xds_tls_port=0, ca_port=0, http_port=free_port(),
                                             state_dir=state), Settings())
    await plane.start()
    yield plane
    await plane.stop()
    shutil.rmtree(state, ignore_errors=True)


def credentials(plane: ControlPlane, identity: Identity | None) -> grpc.ChannelCredentials:
    assert plane.identity is not None
    root = plane.identity.authority.trust_bundle().encode()
    if identity is None:
        return grpc.ssl_channel_credentials(root)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = plane.identity.authority.sign_csr(csr_for(identity.uri, key), identity)
    return grpc.ssl_channel_credentials(root, key_pem(key), "".join(issued.chain[:-1]).encode())


def node(namespace: str, sa: str) -> tuple[str, dict[str, str]]:
    return (f"sidecar~127.0.1.5~sleep-0.{namespace}~{namespace}.svc.cluster.local",
            {"NAMESPACE": namespace, "SERVICE_ACCOUNT": sa})


async def test_a_proxy_with_its_own_certificate_gets_config(cp: ControlPlane) -> None:
    target = f"127.0.0.1:{cp.opts.xds_tls_port}"
    node_id, meta = node("foo", "sleep")
    async with grpc.aio.secure_channel(target, credentials(cp, SLEEP)) as channel, \
            AdsClient(target, node_id, metadata=meta, channel=channel) as client:
        await await_for(lambda: _true(client.synced.is_set()), timeout=30, what="config over mTLS")
        assert client.resources(CLUSTER)  # Passthrough/BlackHole at least
        assert cp.server is not None and SLEEP.uri in cp.server.connections()[0].identities


@pytest.mark.parametrize("namespace,sa", [("bar", "httpbin"), ("foo", "httpbin"), ("bar", "sleep")])
async def test_a_proxy_claiming_another_identity_gets_no_config(cp: ControlPlane, caplog, namespace, sa) -> None:
    caplog.set_level(logging.WARNING)
    target = f"127.0.0.1:{cp.opts.xds_tls_port}"
    node_id, meta = node(namespace, sa)
    async with grpc.aio.secure_channel(target, credentials(cp, SLEEP)) as channel:
        client = AdsClient(target, node_id, metadata=meta, channel=channel)
        await client.start()
        try:
            await await_for(lambda: _true(client.done), timeout=30, what="the stream to be refused")
            assert client.error is not None and client.error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert not client.resources(CLUSTER)
        finally:
            await client.close()
    assert f"refused proxy {node_id}" in caplog.text and f"matched {namespace}/{sa}" in caplog.text


async def test_no_client_certificate_no_stream_and_no_plaintext_port(cp: ControlPlane) -> None:
    target = f"127.0.0.1:{cp.opts.xds_tls_port}"
    node_id, meta = node("foo", "sleep")
    async with grpc.aio.secure_channel(target, credentials(cp, None)) as channel:
        client = AdsClient(target, node_id, metadata=meta, channel=channel)
        await client.start()
        try:
            await await_for(lambda: _true(client.done), timeout=30, what="the handshake to be refused")
            assert client.error is not None and client.error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await client.close()
    assert cp.opts.xds_port == 0  # plaintext ADS is off by default


async def test_plaintext_ads_when_asked_binds_loopback_only() -> None:
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_port=0, xds_tls_port=0, ca_port=0, http_port=free_port(),
                                             state_dir=state, xds_plaintext=True, host="127.0.0.1"), Settings())
    await plane.start()
    try:
        node_id, meta = node("bar", "anything")  # no identity checks on the debugging port
        async with AdsClient(f"127.0.0.1:{plane.opts.xds_port}", node_id, metadata=meta) as client:
            await await_for(lambda: _true(client.synced.is_set()), timeout=30, what="plaintext config")
    finally:
        await plane.stop()
        shutil.rmtree(state, ignore_errors=True)


async def _true(value: object) -> bool:
    return bool(value)
