"""Workload identity end to end: the agent makes a key, gets it signed by the control plane's CA over TLS with its
join token, serves it to a real Envoy over SDS (Istio's secrets `default` and `ROOTCA` from the `sds-grpc`
cluster), and a rotation reaches Envoy.

Envoy only asks SDS for secrets its config references; until the mTLS work generates such config, the test adds
a static TLS listener that uses both secrets (the same SdsSecretConfig shape Istio generates). What Envoy loaded is
read back from its admin `/certs` (on loopback) and from a real TLS handshake against that listener.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from sailmesh.agent.config import AgentConfig
from sailmesh.agent.main import run_agent
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import free_port
from sailmesh.settings import Settings
from sailmesh.testing.waiting import await_for, random_loopback_block

pytestmark = pytest.mark.e2e

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def sds(name: str) -> dict[str, Any]:
    """Istio's SdsSecretConfig: the secret by name from the `sds-grpc` cluster."""
    return {"name": name, "sds_config": {"api_config_source": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}, "resource_api_version": "V3"}}


def tls_listener(ip: str, port: int) -> dict[str, Any]:
    return {
        "name": "sds-probe",
        "address": {"socket_address": {"address": ip, "port_value": port}},
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": DOWNSTREAM_TLS,
                "common_tls_context": {"tls_certificate_sds_secret_configs": [sds("default")],
                                       "validation_context_sds_secret_config": sds("ROOTCA")},
                "require_client_certificate": False}},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": TCP_PROXY, "stat_prefix": "probe", "cluster": "prometheus_stats"}}],
        }],
    }  # fmt: skip


async def admin_certs(admin: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(trust_env=False) as s, s.get(admin + "/certs") as r:
        return list((await r.json()).get("certificates", []))


def served_certificate(ip: str, port: int) -> x509.Certificate:
    """The certificate Envoy presents on the probe listener (a real handshake, no verification here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import socket

    with socket.create_connection((ip, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
async def control_plane():
    state = tempfile.mkdtemp(prefix="smcp")
    opts = ControlPlaneOptions(xds_port=0, http_port=free_port(), xds_tls_port=0, ca_port=0, state_dir=state,
                               min_cert_ttl_s=2)
    cp = ControlPlane(opts, Settings())
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()
        shutil.rmtree(state, ignore_errors=True)


async def test_envoy_gets_its_certificate_over_sds_and_picks_up_a_rotation(control_plane: ControlPlane) -> None:
    cp = control_plane
    assert cp.identity is not None
    # The platform's part: a join token for foo/sleep, handed over in a 0600 file.
    async with aiohttp.ClientSession(trust_env=False) as s:
        url = f"http://127.0.0.1:{cp.opts.http_port}/api/v1/join-tokens"
        body = {"namespace": "foo", "serviceAccount": "sleep"}
        async with s.post(url, json=body) as r:
            assert r.status == 401  # the API wants its token
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {cp.identity.api_token}"}) as r:
            token = (await r.json())["token"]
    state_dir = Path(tempfile.mkdtemp(prefix="smsds"))  # short: the SDS socket path must fit in sun_path
    token_file = state_dir / "join-token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)

    ip = f"{random_loopback_block()}.2"
    probe_port = free_port()
    cfg = AgentConfig(ip=ip, name="sleep-0", namespace="foo", service_account="sleep",
                      xds_port=cp.opts.xds_tls_port, xds_tls=True, ca_address=f"127.0.0.1:{cp.opts.ca_port}",
                      ca_root_file=str(cp.identity.root_cert_path), token_file=str(token_file), cert_ttl_s=6,
                      admin_port=free_port(), stats_port=free_port(), health_port=free_port(),
                      status_port=free_port(), drain_seconds=0)
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(cfg, state_dir, stop,
                                          extra_static={"listeners": [tls_listener(ip, probe_port)]}))
    try:
        async def loaded() -> list[dict[str, Any]] | None:
            if agent.done():
                agent.result()
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                certs = await admin_certs(cfg.admin_url)
                chains = [c for c in certs if c.get("cert_chain")]
                return chains or None
            return None

        loaded_certs = await await_for(loaded, timeout=30, what="Envoy to load the `default` secret over SDS")
        # Both the SDS `default` (the probe listener) and the xDS connection's certificate carry the identity.
        for entry in loaded_certs:
            assert [s["uri"] for s in entry["cert_chain"][0]["subject_alt_names"]] == [SLEEP]
            assert entry["ca_cert"], "ROOTCA (the validation context) is loaded too"
        assert stat_mode(state_dir / "sds.sock") == 0o600

        # What Envoy really serves: the same certificate, and it chains to the CA's root. (The listener may still
        # be warming for a moment after /certs shows the secret.)
        async def handshake() -> x509.Certificate:
            return await asyncio.to_thread(served_certificate, ip, probe_port)

        served = await await_for(handshake, timeout=30, what="a TLS handshake with the SDS certificate")
        assert served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == [SLEEP]
        root = x509.load_pem_x509_certificate(cp.identity.authority.trust_bundle().encode())
        served.verify_directly_issued_by(root)

        # Rotation: with a 6 s certificate the agent renews after about 3 s; Envoy serves the new one.
        async def rotated() -> x509.Certificate | None:
            if agent.done():
                agent.result()
            cert = await asyncio.to_thread(served_certificate, ip, probe_port)
            return cert if cert.serial_number != served.serial_number else None

        new = await await_for(rotated, timeout=30, what="Envoy to serve the rotated certificate")
        new.verify_directly_issued_by(root)
        assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == [SLEEP]
        # xDS came over mTLS with the workload certificate: the control plane saw the proxy's SPIFFE ID.
        async def connected() -> list[Any]:
            return cp.server.connections() if cp.server else []

        (conn,) = await await_for(connected, timeout=30, what="the proxy's xDS stream over mTLS")
        assert SLEEP in conn.identities
        # ... in TLS 1.3, as Istio's xDS connection (Envoy's upstream default maximum is 1.2)
        async with aiohttp.ClientSession(trust_env=False) as s, \
                s.get(cfg.admin_url + "/stats?filter=^cluster.xds-grpc.ssl.versions") as r:
            versions = dict(line.split(": ") for line in (await r.text()).splitlines())
        assert int(versions.get("cluster.xds-grpc.ssl.versions.TLSv1.3", 0)) >= 1, versions
        assert int(versions.get("cluster.xds-grpc.ssl.versions.TLSv1.2", 0)) == 0, versions
        # The key never left the agent: only the 0600 file Envoy reads for its xDS connection holds it (base64).
        key_b64 = base64.b64encode(b"-----BEGIN PRIVATE KEY-----")[:24]
        holders = [p for p in state_dir.rglob("*") if p.is_file() and key_b64 in p.read_bytes()]
        assert [p.relative_to(state_dir).as_posix() for p in holders] == ["xds-certs/xds-cert.json"]
        assert not [p for p in state_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
        assert stat_mode(holders[0]) == 0o600 and stat_mode(holders[0].parent) == 0o700
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)
        shutil.rmtree(state_dir, ignore_errors=True)


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
