"""Mutual TLS between two real Envoys running the generated config (static bootstrap, secrets inline).

The generated clusters and listeners are loaded as they are, except that their SDS references (`sds-grpc`) point at
static secrets of the same names (`default`, `ROOTCA`) holding certificates this test signs in Istio's shape (empty
subject, SPIFFE URI SAN): everything else (auto mTLS matches, ALPN, filter chains, XFCC) is what a sidecar gets.
The agent's SDS path is proven by tests/e2e/test_mesh_mtls.py.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import pathlib
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from sailmesh.processes import free_port
from sailmesh.registry.model import Workload
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.testing.waiting import random_loopback_block, wait_for
from tests.e2e.test_generate_envoy import run_envoy, static_bootstrap
from tests.unit.test_generate_support import make_snapshot, resources, service, sidecar

pytestmark = pytest.mark.e2e

TLS_MODE = "security.istio.io/tlsMode"
SLEEP_ID = "spiffe://cluster.local/ns/foo/sa/sleep"
HTTPBIN_ID = "spiffe://cluster.local/ns/foo/sa/httpbin"
HTTPBIN = "httpbin.foo.svc.cluster.local"


# --- certificates in Istio's shape -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pem:
    chain: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Authority:
    """A self-signed root that signs workload certificates: empty subject, one SPIFFE URI SAN (Istio's shape)."""

    def __init__(self, name: str = "sailmesh test root") -> None:
        self.key = _key()
        self.name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, spiffe: str) -> Pem:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def with_static_secrets(b: bootstrap_pb2.Bootstrap, authority: Authority, identity: Pem) -> bootstrap_pb2.Bootstrap:
    """The generated SDS references resolved from static secrets of the same names (no sds-grpc needed)."""
    def local(ctx: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext) -> None:
        for s in ctx.common_tls_context.tls_certificate_sds_secret_configs:
            assert s.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name == "sds-grpc"
            s.ClearField("sds_config")
        cvc = ctx.common_tls_context.combined_validation_context
        if cvc.HasField("validation_context_sds_secret_config"):
            cvc.validation_context_sds_secret_config.ClearField("sds_config")

    def rewrite(ts: object, cls: type) -> None:
        if ts.name != "envoy.transport_sockets.tls":  # type: ignore[attr-defined]
            return
        ctx = cls()
        ts.typed_config.Unpack(ctx)  # type: ignore[attr-defined]
        local(ctx)
        ts.typed_config.Pack(ctx)  # type: ignore[attr-defined]

    for c in b.static_resources.clusters:
        if c.HasField("transport_socket"):
            rewrite(c.transport_socket, tls_pb2.UpstreamTlsContext)
        for m in c.transport_socket_matches:
            rewrite(m.transport_socket, tls_pb2.UpstreamTlsContext)
    for li in b.static_resources.listeners:
        for fc in li.filter_chains:
            if fc.HasField("transport_socket"):
                rewrite(fc.transport_socket, tls_pb2.DownstreamTlsContext)
    default = secret_pb2.Secret(name="default")
    default.tls_certificate.certificate_chain.inline_bytes = identity.chain
    default.tls_certificate.private_key.inline_bytes = identity.key
    root = secret_pb2.Secret(name="ROOTCA")
    root.validation_context.trusted_ca.inline_bytes = authority.pem
    b.static_resources.secrets.extend([default, root])
    return b


# --- the apps -----------------------------------------------------------------------------------------------------

class HeadersApp(http.server.ThreadingHTTPServer):
    """httpbin's /headers: the request headers as JSON (so XFCC is visible)."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


class EchoApp(socketserver.ThreadingTCPServer):
    """A raw TCP echo server."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while data := self.request.recv(4096):
                    self.request.sendall(data)

        super().__init__((host, port), Handler)


@dataclass
class Pair:
    """sleep (client sidecar) and httpbin (server sidecar with the apps behind it) in namespace foo."""

    block: str
    sleep: ProxyView
    httpbin: ProxyView
    http_app: int
    tcp_app: int

    @property
    def server_ip(self) -> str:
        return self.httpbin.ip

    def snapshot(self, *config: str, server_sidecar: bool = True) -> MeshSnapshot:
        labels = {"app": "httpbin", **({TLS_MODE: "istio"} if server_sidecar else {})}
        wls = [Workload("httpbin-0", "foo", self.server_ip, labels, service_account="httpbin"),
               Workload("sleep-0", "foo", self.sleep.ip, dict(self.sleep.labels), service_account="sleep")]
        svcs = [service("httpbin", "foo", ports=[(8000, "HTTP"), (9000, "TCP")]),
                service("sleep", "foo", ports=[(80, "HTTP")])]
        return make_snapshot(resources(*config) if config else (), svcs, wls)


@pytest.fixture
def pair(tmp_path: pathlib.Path) -> Iterator[Pair]:
    block = random_loopback_block()
    server_ip, client_ip = f"{block}.1", f"{block}.2"
    http_app, tcp_app = free_port(server_ip), free_port(server_ip)
    apps = [HeadersApp(server_ip, http_app), EchoApp(server_ip, tcp_app)]
    for a in apps:
        threading.Thread(target=a.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield Pair(
        block,
        sidecar("sleep-0", client_ip, "foo", app_ports={}, app="sleep", **{TLS_MODE: "istio"}),
        sidecar("httpbin-0", server_ip, "foo", app_ports={8000: http_app, 9000: tcp_app},
                app="httpbin", **{TLS_MODE: "istio"}),
        http_app, tcp_app,
    )
    for a in apps:
        a.shutdown()
        a.server_close()


@pytest.fixture
def envoys(tmp_path: pathlib.Path) -> Iterator[Callable[[str, bootstrap_pb2.Bootstrap], int]]:
    """Start Envoys from bootstraps (each in its own directory); all are killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, b: bootstrap_pb2.Bootstrap) -> int:
        d = tmp_path / name
        d.mkdir()
        proc, admin = run_envoy(d, b)
        procs.append(proc)
        return admin

    yield start
    for p in procs:
        p.kill()
        p.wait()


def start_pair(pair: Pair, envoys: Callable[[str, bootstrap_pb2.Bootstrap], int], snap: MeshSnapshot,
               client_identity: Pem | None = None) -> tuple[int, int]:
    authority = AUTHORITY
    server = with_static_secrets(static_bootstrap(snap, pair.httpbin, free_port()), authority,
                                 authority.issue(HTTPBIN_ID))
    client = with_static_secrets(static_bootstrap(snap, pair.sleep, free_port()), authority,
                                 client_identity or authority.issue(SLEEP_ID))
    return envoys("client", client), envoys("server", server)


AUTHORITY = Authority()


def via_sleep(pair: Pair, path: str = "/headers") -> tuple[int, dict[str, str]]:
    """sleep's request through its sidecar (HTTP_PROXY style): `GET http://httpbin.foo:8000/headers`."""
    c = http.client.HTTPConnection(pair.sleep.ip, 15001, timeout=10)
    try:
        c.request("GET", f"http://httpbin.foo:8000{path}", headers={"Host": "httpbin.foo:8000"})
        r = c.getresponse()
        body = r.read()
        return r.status, (json.loads(body)["headers"] if r.status == 200 else {})
    finally:
        c.close()


def plaintext_http(pair: Pair) -> int:
    """A client without a sidecar (legacy) straight to the server sidecar; curl's 000 when the connection closes."""
    c = http.client.HTTPConnection(pair.server_ip, 8000, timeout=5)
    try:
        c.request("GET", "/headers", headers={"Host": "httpbin.foo:8000"})
        r = c.getresponse()
        r.read()
        return r.status
    except (ConnectionError, http.client.HTTPException, TimeoutError):
        return 0
    finally:
        c.close()


def plaintext_tcp(pair: Pair, payload: bytes = b"hello\n") -> bytes:
    """Raw TCP to the server sidecar's TCP port: what came back before the connection closed."""
    with socket.create_connection((pair.server_ip, 9000), timeout=5) as s:
        try:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got
        except (ConnectionError, TimeoutError):
            return b""


def stat(admin: int, name: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        c.request("GET", "/stats?format=json&filter=" + name.replace("|", "%7C"))
        stats = json.loads(c.getresponse().read())["stats"]
        return sum(int(s.get("value", 0)) for s in stats if s.get("name") == name)
    finally:
        c.close()


def xfcc_fields(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(";"))


def ready(pair: Pair) -> None:
    """The server's listener accepts (plaintext HTTP under PERMISSIVE/DISABLE, or any TCP connect)."""
    def up() -> bool:
        try:
            socket.create_connection((pair.server_ip, 8000), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=15, what="server sidecar listening")


def test_auto_mtls_between_two_sidecars_without_destination_rule(pair: Pair, envoys) -> None:
    """Istio's default: PERMISSIVE server, auto mTLS client, no DestinationRule. The app sees X-Forwarded-Client-Cert
    as Istio sets it (By = server identity, Hash, Subject="", URI = client identity); handshakes are TLS 1.3."""
    client_admin, server_admin = start_pair(pair, envoys, pair.snapshot())
    ready(pair)
    status, headers = via_sleep(pair)
    assert status == 200
    xfcc = xfcc_fields(headers["x-forwarded-client-cert"])
    assert xfcc["By"] == HTTPBIN_ID and xfcc["URI"] == SLEEP_ID and xfcc["Subject"] == '""'
    assert len(xfcc["Hash"]) == 64 and set(list(xfcc)) == {"By", "Hash", "Subject", "URI"}
    cluster = f"cluster.outbound|8000||{HTTPBIN}"
    assert stat(client_admin, f"{cluster}.ssl.handshake") >= 1
    assert stat(client_admin, f"{cluster}.ssl.versions.TLSv1.3") >= 1  # both ends ours: TLS 1.3
    assert stat(server_admin, f"listener.{pair.server_ip}_8000.ssl.handshake") >= 1
    # the client's own SPIFFE ID check: the server presented httpbin's identity, nothing failed verification
    assert stat(client_admin, f"{cluster}.ssl.fail_verify_san") == 0


def test_permissive_accepts_plaintext_and_mtls_on_the_same_port(pair: Pair, envoys) -> None:
    start_pair(pair, envoys, pair.snapshot())
    ready(pair)
    assert plaintext_http(pair) == 200
    assert plaintext_tcp(pair) == b"hello\n"
    status, headers = via_sleep(pair)
    assert status == 200 and "x-forwarded-client-cert" in headers


STRICT_MESH = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
               "metadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n")


def test_strict_refuses_every_plaintext_client(pair: Pair, envoys) -> None:
    """STRICT: plaintext HTTP and raw TCP never get through (connection closed, curl's 000); mTLS still works."""
    start_pair(pair, envoys, pair.snapshot(STRICT_MESH))
    ready(pair)
    status, headers = via_sleep(pair)
    assert status == 200 and xfcc_fields(headers["x-forwarded-client-cert"])["URI"] == SLEEP_ID
    assert [plaintext_http(pair) for _ in range(25)] == [0] * 25
    assert [plaintext_tcp(pair) for _ in range(25)] == [b""] * 25


def test_strict_requires_a_client_certificate_from_the_mesh_root(pair: Pair, envoys, tmp_path: pathlib.Path) -> None:
    start_pair(pair, envoys, pair.snapshot(STRICT_MESH))
    ready(pair)

    def handshake(name: str, cert: Pem | None) -> bool:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
        if cert is not None:
            (tmp_path / f"{name}.crt").write_bytes(cert.chain)
            (tmp_path / f"{name}.key").write_bytes(cert.key)
            ctx.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        try:
            with socket.create_connection((pair.server_ip, 8000), timeout=5) as raw, ctx.wrap_socket(raw) as s:
                s.sendall(b"GET /headers HTTP/1.1\r\nHost: httpbin.foo:8000\r\n\r\n")
                return s.recv(100).startswith(b"HTTP/1.1 200")
        except (ssl.SSLError, ConnectionError, TimeoutError):
            return False

    assert handshake("mesh", AUTHORITY.issue(SLEEP_ID))  # a mesh certificate: served
    assert not handshake("none", None)  # no client certificate
    assert not handshake("foreign", Authority("another root").issue(SLEEP_ID))  # same SPIFFE ID, foreign root


def test_disable_serves_plaintext_only(pair: Pair, envoys) -> None:
    """Namespace DISABLE: the server is plaintext, and clients' auto mTLS is off for the namespace's services
    (BestEffortInferServiceMTLSMode), so the sidecar client gets through in plaintext (no XFCC)."""
    disable = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
               "metadata: {name: default, namespace: foo}\nspec:\n  mtls: {mode: DISABLE}\n")
    client_admin, _ = start_pair(pair, envoys, pair.snapshot(disable))
    ready(pair)
    assert plaintext_http(pair) == 200
    status, headers = via_sleep(pair)
    assert status == 200 and "x-forwarded-client-cert" not in headers
    assert stat(client_admin, f"cluster.outbound|8000||{HTTPBIN}.ssl.handshake") == 0


def test_auto_mtls_sends_plaintext_to_a_workload_without_sidecar(pair: Pair, envoys) -> None:
    """The endpoint has no tlsMode label (no sidecar): the client's default transport socket match is plaintext."""
    client_admin, _ = start_pair(pair, envoys, pair.snapshot(server_sidecar=False))
    ready(pair)
    status, headers = via_sleep(pair)
    assert status == 200 and "x-forwarded-client-cert" not in headers
    assert stat(client_admin, f"cluster.outbound|8000||{HTTPBIN}.ssl.handshake") == 0
