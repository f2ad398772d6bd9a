"""Join tokens expire and are revoked (with the certificates issued before the revocation, for renewals); CSRs are
rate limited per identity and failed authentications per address (gRPC RESOURCE_EXHAUSTED, HTTP 429 with
Retry-After); renewals over the mTLS port prove the identity with the current certificate."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile

import aiohttp
import grpc
import pytest

from sailmesh.agent.identity import make_csr
from sailmesh.ca.authority import CertificateAuthority
from sailmesh.ca.limits import Limit, RateLimiter, peer_address, retry_after
from sailmesh.ca.service import CertificateService, IstioCertificateRequest, ServingCredentials, client_call, handler
from sailmesh.ca.tokens import JoinTokens
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.errors import AuthenticationError, RateLimitedError
from sailmesh.processes import free_port
from sailmesh.settings import Settings

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate_and_bounded_memory():
    clock = Clock()
    limiter = RateLimiter(Limit(rate=2.0, burst=3.0), clock=clock, max_keys=4)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5) and limiter.wait("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # per key
    clock.now += 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    for i in range(50):
        limiter.take(f"flood-{i}")
    assert len(limiter) <= 4  # buckets kept: bounded
    assert RateLimiter(Limit(0, 0)).take("x") == 0.0  # rate 0: no limit
    assert retry_after(0.2) == "1" and retry_after(2.1) == "3"
    assert peer_address("ipv4:127.0.0.1:5000") == "127.0.0.1" and peer_address("ipv6:[::1]:5000") == "::1"


def test_tokens_expire_and_revocation_is_remembered(tmp_path, caplog):
    clock = Clock()
    tokens = JoinTokens(tmp_path / "tokens.json", clock=clock)
    short = tokens.issue("foo", "sleep", ttl_s=60)
    forever = tokens.issue("foo", "sleep")
    assert tokens.authenticate(short).namespace == "foo"
    clock.now += 60
    with pytest.raises(AuthenticationError, match="expired join token"):
        tokens.authenticate(short)
    with pytest.raises(AuthenticationError, match="unknown"):
        tokens.authenticate(short)  # gone once expired
    assert tokens.authenticate(forever).service_account == "sleep"
    assert tokens.revoked_at("foo", "sleep") == 0
    assert tokens.revoke("foo", "sleep") == 1
    with pytest.raises(AuthenticationError):
        tokens.authenticate(forever)
    again = JoinTokens(tmp_path / "tokens.json")  # a restart keeps the revocation
    assert again.revoked_at("foo", "sleep") > 0 and len(again) == 0
    assert short not in caplog.text and forever not in caplog.text


def test_csrs_are_limited_per_identity(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens()
    service = CertificateService(ca, tokens, csr_limit=Limit(rate=0.001, burst=2))
    sleep, other = tokens.issue("foo", "sleep"), tokens.issue("bar", "httpbin")
    csr = make_csr(SLEEP)[0].decode()
    service.create(csr, 3600, sleep, ())
    service.create(csr, 3600, sleep, ())
    with pytest.raises(RateLimitedError, match=re.escape("too many CSRs for spiffe://cluster.local/ns/foo/sa/sleep;")):
        service.create(csr, 3600, sleep, ())
    service.create(make_csr("spiffe://cluster.local/ns/bar/sa/httpbin")[0].decode(), 3600, other, ())


@pytest.fixture
async def mtls_ca(tmp_path):
    """The certificate service on a port that requires client certificates (as on 15012) and one that does not."""
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens()
    service = CertificateService(ca, tokens, failed_auth_limit=Limit(rate=0.001, burst=3))
    servers, ports = [], []
    for require in (False, True):
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler(service),))
        ports.append(server.add_secure_port("127.0.0.1:0", ServingCredentials(ca, require_client_auth=require)
                                            .credentials()))
        await server.start()
        servers.append(server)
    yield ca, tokens, ports
    for server in servers:
        await server.stop(0)


async def _create(port: int, root: bytes, token: str = "", key: bytes | None = None, chain: bytes | None = None):
    creds = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=chain)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        csr, new_key = make_csr(SLEEP)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        response = await client_call(channel)(IstioCertificateRequest(csr=csr.decode()), metadata=metadata)
        return "".join(response.cert_chain[:-1]).encode(), new_key


async def test_renewal_with_the_certificate_outlives_the_token_until_revoked(mtls_ca):
    ca, tokens, (ca_port, mtls_port) = mtls_ca
    root = ca.trust_bundle().encode()
    token = tokens.issue("foo", "sleep", ttl_s=5)  # long enough to be used once on a loaded machine
    chain, key = await _create(ca_port, root, token)
    while True:  # until the token has expired: then the certificate still renews
        try:
            tokens.authenticate(token)
        except AuthenticationError:
            break
        await asyncio.sleep(0.2)
    chain, key = await _create(mtls_port, root, key=key, chain=chain)
    await asyncio.sleep(1.1)  # revocation times are compared in seconds of issue time; make them distinct
    tokens.revoke("foo", "sleep")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _create(mtls_port, root, key=key, chain=chain)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in (e.value.details() or "")


async def test_failed_authentications_are_rate_limited_per_address(mtls_ca, caplog):
    caplog.set_level(logging.WARNING)
    ca, tokens, (ca_port, _) = mtls_ca
    root = ca.trust_bundle().encode()
    codes = []
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _create(ca_port, root, "smjt.guessed")
        codes.append(e.value.code())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    # a valid token from the same address still gets its certificate (every local caller shares 127.0.0.1)
    chain, _ = await _create(ca_port, root, tokens.issue("foo", "sleep"))
    assert chain
    assert "smjt.guessed" not in caplog.text


@pytest.fixture
async def cp():
    state = tempfile.mkdtemp(prefix="smcp")
    plane = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(), state_dir=state),
                         Settings())
    await plane.start()
    yield plane
    await plane.stop()
    shutil.rmtree(state, ignore_errors=True)


async def test_http_api_answers_429_with_retry_after_beyond_ten_failed_authentications(cp: ControlPlane, caplog):
    caplog.set_level(logging.WARNING)
    assert cp.identity is not None
    api = f"http://127.0.0.1:{cp.opts.http_port}"
    good = {"Authorization": f"Bearer {cp.identity.api_token}"}
    statuses, retry = [], ""
    async with aiohttp.ClientSession(trust_env=False) as s:
        for _ in range(12):
            async with s.get(api + "/api/v1/resources", headers={"Authorization": "Bearer wrong-token"}) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After", retry)
        assert statuses == [401] * 10 + [429] * 2
        assert retry.isdigit() and int(retry) >= 1
        async with s.get(api + "/api/v1/resources", headers=good) as r:
            assert r.status == 200  # the CLI's valid token is never held back by someone else's failures
        async with s.get(api + "/ready") as r:
            assert r.status == 200  # probes are not authenticated, so not limited
    assert "wrong-token" not in caplog.text


async def test_join_token_ttl_and_revoke_through_the_api(cp: ControlPlane):
    assert cp.identity is not None
    api = f"http://127.0.0.1:{cp.opts.http_port}"
    good = {"Authorization": f"Bearer {cp.identity.api_token}"}
    async with aiohttp.ClientSession(trust_env=False) as s:
        body = {"namespace": "foo", "serviceAccount": "sleep", "ttlSeconds": 3600}
        async with s.post(api + "/api/v1/join-tokens", json=body, headers=good) as r:
            token = (await r.json())["token"]
        grant = cp.identity.tokens.authenticate(token)
        assert grant.expires_at - grant.issued_at == pytest.approx(3600)
        async with s.post(api + "/api/v1/join-tokens", json={**body, "ttlSeconds": -1}, headers=good) as r:
            assert r.status == 400
        async with s.post(api + "/api/v1/join-tokens/revoke", json=body, headers=good) as r:
            assert r.status == 200 and (await r.json()) == {"revoked": 1}
    with pytest.raises(AuthenticationError):
        cp.identity.tokens.authenticate(token)
