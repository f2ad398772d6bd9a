"""Remote callers of the control plane's HTTP API use mTLS: a client certificate of the admin identity, issued by
the mesh CA through `sailmesh x ca admin-cert` (which the local CLI runs with its 0600 token). Without a client
certificate: 401; with a workload's certificate: 403; both logged without secrets; the API token alone does not
open the remote port. No join token can be issued for the admin identity."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import stat
import tempfile
from pathlib import Path

import aiohttp
import pytest

from sailmesh.agent.identity import make_csr
from sailmesh.cli.apiclient import call, remember_token, tls_context
from sailmesh.cli.ca import admin_cert
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.processes import free_port
from sailmesh.settings import Settings


@pytest.fixture
async def cp():
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(), state_dir=state,
                                             api_mtls_address="127.0.0.1:0"), Settings())
    await plane.start()
    yield plane
    await plane.stop()
    shutil.rmtree(state, ignore_errors=True)


async def test_remote_callers_need_the_admin_certificate(cp: ControlPlane, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert cp.identity is not None
    local = f"http://127.0.0.1:{cp.opts.http_port}"
    remote = f"https://{cp.opts.api_mtls_address}"
    remember_token(local, cp.identity.api_token)  # the local CLI's 0600 token
    certs = tmp_path / "admin"
    assert await asyncio.to_thread(admin_cert, local, str(certs), 600) == 0
    assert stat.S_IMODE((certs / "key.pem").stat().st_mode) == 0o600

    status, body = await asyncio.to_thread(call, remote, "GET", "/api/v1/resources?kind=VirtualService",
                                           cert_dir=str(certs))
    assert status == 200 and body["items"] == []

    # No client certificate (the server's certificate still verified against the mesh root): 401.
    no_cert = ssl.create_default_context(cafile=str(certs / "root-cert.pem"))
    no_cert.check_hostname = False
    async with aiohttp.ClientSession(trust_env=False) as s:
        async with s.get(remote + "/api/v1/resources", ssl=no_cert,
                         headers={"Authorization": f"Bearer {cp.identity.api_token}"}) as r:
            assert r.status == 401  # the token is for the local CLI; the remote port wants a certificate
            assert "no client certificate" in (await r.json())["errors"][0]
        # A workload's certificate of the same CA: authenticated, not the admin: 403.
        workload = tmp_path / "workload"
        workload.mkdir()
        csr, key = make_csr("spiffe://cluster.local/ns/foo/sa/sleep")
        chain = cp.identity.certificates.create(csr.decode(), 600, cp.identity.tokens.issue("foo", "sleep"), ())
        (workload / "cert.pem").write_text("".join(chain[:-1]))
        (workload / "key.pem").write_bytes(key)
        (workload / "root-cert.pem").write_text(chain[-1])
        async with s.get(remote + "/api/v1/resources", ssl=tls_context(str(workload))) as r:
            assert r.status == 403
            assert "ns/foo/sa/sleep is not the admin identity" in (await r.json())["errors"][0]
    logged = [r.getMessage() for r in caplog.records if "(mTLS: " in r.getMessage()]
    assert len(logged) == 2 and "unauthenticated" in logged[0] and "forbidden" in logged[1]
    assert cp.identity.api_token not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


async def test_no_join_token_for_the_admin_identity(cp: ControlPlane) -> None:
    assert cp.identity is not None
    api = f"http://127.0.0.1:{cp.opts.http_port}"
    async with aiohttp.ClientSession(trust_env=False) as s:
        async with s.post(api + "/api/v1/join-tokens", json={"namespace": "istio-system",
                                                             "serviceAccount": "sailmesh-admin"},
                          headers={"Authorization": f"Bearer {cp.identity.api_token}"}) as r:
            assert r.status == 400 and "reserved" in (await r.json())["errors"][0]
