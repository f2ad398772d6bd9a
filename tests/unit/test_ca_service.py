"""Istio's certificate service over TLS: a join token proves one identity; anything else is refused and logged
without the token's value (Istio's CreateCertificate answers UNAUTHENTICATED when authentication fails)."""

from __future__ import annotations

import logging

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
    client_call,
    handler,
)
from sailmesh.ca.tokens import JoinTokens

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"


@pytest.fixture
async def ca_server(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens(tmp_path / "tokens.json")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(CertificateService(ca, tokens)),))
    port = server.add_secure_port("127.0.0.1:0", ServingCredentials(ca).credentials())
    await server.start()
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca.trust_bundle().encode()))
    yield ca, tokens, client_call(channel)
    await channel.close()
    await server.stop(0)


def test_messages_have_istios_field_numbers():
    fields = {f.name: f.number for f in IstioCertificateRequest.DESCRIPTOR.fields}
    assert fields == {"csr": 1, "validity_duration": 3, "metadata": 4}
    assert IstioCertificateResponse.DESCRIPTOR.fields_by_name["cert_chain"].number == 1
    assert IstioCertificateRequest.DESCRIPTOR.full_name == "istio.v1.auth.IstioCertificateRequest"


async def test_a_token_gets_its_identity_signed(ca_server):
    ca, tokens, create = ca_server
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
    _, tokens, create = ca_server
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


class _TokenContext:
    """The parts of a grpc.aio servicer context the handler reads for a join-token caller; reading the channel's
    peer identities or auth context is counted."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.certificate_reads = 0

    def invocation_metadata(self):
        return (("authorization", f"Bearer {self.token}"),)

    def peer_identities(self):
        self.certificate_reads += 1
        return None

    def auth_context(self):
        self.certificate_reads += 1
        return {}

    def peer(self):
        return "ipv4:127.0.0.1:1"


async def test_a_token_caller_is_signed_without_reading_the_channels_certificate(tmp_path):
    """The token decides the identity (a certificate on the same channel is not consulted), so the handler does not
    read the channel's peer identities per request: the first-CSR port's per-request path does only what it uses."""
    ca = CertificateAuthority.self_signed(tmp_path)
    tokens = JoinTokens(tmp_path / "tokens.json")
    context = _TokenContext(tokens.issue("foo", "sleep"))
    csr, _ = make_csr(SLEEP)
    response = await CertificateService(ca, tokens).CreateCertificate(IstioCertificateRequest(csr=csr.decode()),
                                                                      context)
    leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [SLEEP]
    assert context.certificate_reads == 0
