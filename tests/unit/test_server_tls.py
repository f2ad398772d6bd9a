"""The ADS server over mutual TLS: the proxy's certificate identity shows in the connection status."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sailmesh.server.ads import AdsServer
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.static_source import StaticSource
from sailmesh.testing.waiting import await_for
from sailmesh.xds.types import CLUSTER, LISTENER

SPIFFE = "spiffe://cluster.local/ns/default/sa/sleep"


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          san: x509.GeneralName | None, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


async def test_mtls_stream_records_the_proxy_identity():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, None, ca=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert, srv_key_pem = _pem(_cert("istiod", srv_key, (ca.subject, ca_key),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")), ca=False), srv_key)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli_cert, cli_key_pem = _pem(_cert("sleep", cli_key, (ca.subject, ca_key),
                                       x509.UniformResourceIdentifier(SPIFFE), ca=False), cli_key)

    source = StaticSource()
    server = AdsServer(source)
    creds = grpc.ssl_server_credentials([(srv_key_pem, srv_cert)], root_certificates=ca_pem,
                                        require_client_auth=True)
    port = await server.serve("127.0.0.1", 0, credentials=creds)
    try:
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem, cli_key_pem,
                                                                                             cli_cert))
        async with channel, AdsClient(f"127.0.0.1:{port}", "sleep-1", channel=channel) as client:
            await asyncio.wait_for(client.synced.wait(), 5)
            (conn,) = server.connections()
            assert SPIFFE in conn.identities
            assert conn.peer.startswith("ipv4:127.0.0.1:")
            assert set(conn.types) == {CLUSTER, LISTENER}
        # A client without a certificate is refused by the handshake.
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem)) as anon:
            bad = AdsClient(f"127.0.0.1:{port}", "anon", channel=anon)
            await bad.start()
            try:
                await await_for(lambda: asyncio.sleep(0, bad.done), timeout=5, what="the handshake refused")
                assert bad.error is not None and bad.error.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                await bad.close()
    finally:
        await server.stop(0)
