"""Istio's certificate service over TLS: a join token proves one identity; anything else is refused and logged
without the token's value (Istio's CreateCertificate answers UNAUTHENTICATED when authentication fails)."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cryptography import x509

from sailmesh.agent.identity import make_csr
from sailmesh.ca.authority import CertificateAuthority
from sailmesh.ca.service import (
    CertificateService,
    IstioCertificateRequest,
    IstioCertificateResponse,
    ServingCredentials,
    blocking_handler,
    client_call,
    handler,
)
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import AuthenticationError

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"


@pytest.fixture(params=["aio", "blocking"])
async def ca_server(tmp_path, request):
    """The service on grpc.aio (15012) and on the synchronous server the first-CSR port (15013) runs."""
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens(tmp_path / "tokens.json")
    service = CertificateService(ca, tokens)
    if request.param == "aio":
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler(service),))
    else:
        service.loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(2)
        sync_server = grpc.server(pool, handlers=[blocking_handler(service)])
    credentials = ServingCredentials(ca).credentials()
    port = (server if request.param == "aio" else sync_server).add_secure_port("127.0.0.1:0", credentials)
    if request.param == "aio":
        await server.start()
    else:
        sync_server.start()
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca.trust_bundle().encode()))
    yield ca, tokens, client_call(channel), service
    await channel.close()
    if request.param == "aio":
        await server.stop(0)
    else:
        await asyncio.to_thread(sync_server.stop(0).wait, 5)
        pool.shutdown()


def test_messages_have_istios_field_numbers():
    fields = {f.name: f.number for f in IstioCertificateRequest.DESCRIPTOR.fields}
    assert fields == {"csr": 1, "validity_duration": 3, "metadata": 4}
    assert IstioCertificateResponse.DESCRIPTOR.fields_by_name["cert_chain"].number == 1
    assert IstioCertificateRequest.DESCRIPTOR.full_name == "istio.v1.auth.IstioCertificateRequest"


async def test_a_token_gets_its_identity_signed(ca_server):
    ca, tokens, create, _ = ca_server
    token = tokens.issue("foo", "sleep")
    csr, _ = make_csr(SLEEP)
    response = await create(IstioCertificateRequest(csr=csr.decode(), validity_duration=3600),
                            metadata=(("authorization", f"Bearer {token}"),))
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SLEEP]
    assert response.cert_chain[-1] == ca.trust_bundle()
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life.total_seconds() == pytest.approx(3600 + 60, abs=2)  # the requested validity (+ 1 min backdate)


async def test_another_identity_no_token_and_unknown_token_are_refused_without_logging_the_token(ca_server, caplog):
    caplog.set_level(logging.DEBUG)
    _, tokens, create, _ = ca_server
    token = tokens.issue("foo", "sleep")
    csr, _ = make_csr("spiffe://cluster.local/ns/bar/sa/httpbin")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(IstioCertificateRequest(csr=csr.decode()), metadata=(("authorization", f"Bearer {token}"),))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(IstioCertificateRequest(csr=make_csr(SLEEP)[0].decode()))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(IstioCertificateRequest(csr=make_csr(SLEEP)[0].decode()),
                     metadata=(("authorization", "Bearer smjt.guessed"),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(IstioCertificateRequest(csr="garbage"), metadata=(("authorization", f"Bearer {token}"),))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refusals = [r for r in caplog.records if "CSR refused" in r.getMessage()]
    assert len(refusals) == 4 and "ns/bar/sa/httpbin" in refusals[0].getMessage()
    assert token not in caplog.text and "smjt.guessed" not in caplog.text


async def test_a_platform_token_is_verified_on_the_event_loop_and_signs_its_identity(ca_server):
    # on the synchronous port the verifier (async: Kubernetes TokenReview) runs on the control plane's loop
    _, _, create, service = ca_server
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []

    class Verifier:
        async def verify(self, token: str) -> tuple[str, str]:
            seen.append((token, asyncio.get_running_loop() is loop))
            if token != "k8s-token":
                raise AuthenticationError("TokenReview: not authenticated")
            return "foo", "sleep"

    service.token_verifier = Verifier()
    response = await create(IstioCertificateRequest(csr=make_csr(SLEEP)[0].decode()),
                            metadata=(("authorization", "Bearer k8s-token"),))
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SLEEP]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(IstioCertificateRequest(csr=make_csr(SLEEP)[0].decode()),
                     metadata=(("authorization", "Bearer forged"),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:  # a platform token proves only its own identity
        await create(IstioCertificateRequest(csr=make_csr("spiffe://cluster.local/ns/bar/sa/httpbin")[0].decode()),
                     metadata=(("authorization", "Bearer k8s-token"),))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert seen == [("k8s-token", True), ("forged", True), ("k8s-token", True)]


def test_citadel_counters_count_requests_and_issued_certificates(tmp_path):
    # Istio's citadel_server_csr_count counts every CSR received, _success_cert_issuance_count the signed ones
    from sailmesh.errors import SailmeshError
    from sailmesh.metrics import CitadelMetrics, Registry

    registry = Registry()
    metrics = CitadelMetrics(registry)
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens(tmp_path / "tokens.json")
    service = CertificateService(ca, tokens, metrics)
    csr, _ = make_csr(SLEEP)
    service.create(csr.decode(), 3600, tokens.issue("foo", "sleep"), ())
    with pytest.raises(SailmeshError):
        service.create(csr.decode(), 3600, tokens.issue("bar", "other"), ())  # asks for another identity
    text = registry.render()
    assert "citadel_server_csr_count 2.0" in text and "citadel_server_success_cert_issuance_count 1.0" in text


async def test_callers_that_never_send_their_request_do_not_block_first_csrs(tmp_path):
    # grpc's synchronous server (the first-CSR port) gives a call a thread before its request arrives: a few
    # stalled callers (no credentials needed) must not take every thread
    from sailmesh.ca.authority import CaOptions
    from sailmesh.ca.service import FULL_METHOD
    from sailmesh.controlplane.identity import MeshIdentity

    identity = MeshIdentity(str(tmp_path), "", CaOptions(), ["127.0.0.1"])
    port = await identity.serve_bootstrap("127.0.0.1", 0)
    release = threading.Event()

    def never():
        release.wait()
        yield from ()

    credentials = grpc.ssl_channel_credentials(identity.authority.trust_bundle().encode())
    stalled = [grpc.secure_channel(f"127.0.0.1:{port}", credentials) for _ in range(4)]
    calls = []  # kept: a call whose future is collected is cancelled
    try:
        for channel in stalled:  # a call started, its request never sent
            await asyncio.to_thread(grpc.channel_ready_future(channel).result, 10)
            calls.append(channel.stream_unary(
                FULL_METHOD, request_serializer=IstioCertificateRequest.SerializeToString,
                response_deserializer=IstioCertificateResponse.FromString).future(never()))
        await asyncio.sleep(1.0)  # the calls reach the server (no way to see them arrive from here)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            token = identity.tokens.issue("foo", "sleep")
            response = await client_call(channel)(IstioCertificateRequest(csr=make_csr(SLEEP)[0].decode()),
                                                  metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        assert len(response.cert_chain) == 2
    finally:
        release.set()
        for channel in stalled:
            channel.close()
        await identity.stop()
