"""Istio's secure-ingress tasks on the embedded mesh, real Envoy and real TLS with certificates the test makes:
SIMPLE and MUTUAL termination with credentialName Secrets (istio.io tasks/traffic-management/ingress/secure-ingress),
SNI passthrough to a TLS server behind the gateway (ingress-sni-passthrough) and httpsRedirect's 301.

The gateway binds Gateway port 443 at 8443 (ports below 1024 move up by 8000), as 80 at 8080, so the task's
`curl --resolve httpbin.example.com:443:$INGRESS_HOST` becomes `--resolve httpbin.example.com:8443:<gateway ip>`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pathlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

KeyPair = tuple[bytes, bytes]  # (cert PEM, key PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, client: bool = False) -> KeyPair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# The "nginx" of Istio's SNI passthrough task: a TLS server (its own certificate for nginx.example.com) that
# answers any request with a fixed page; it runs as a workload without sidecar, reached only by SNI passthrough.
TLS_BACKEND = """
import os, socket, ssl, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.environ["CERT_FILE"], os.environ["KEY_FILE"])
srv = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])))
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as s:
            s.recv(65536)
            body = os.environ.get("BODY", "Welcome to nginx!").encode()
            head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body)
            s.sendall(head + body)
    except (OSError, ssl.SSLError):
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


# httpbin behind a sidecar (Service + LocalWorkload), the backend of the gateway TLS tests
HTTPBIN = """apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default, labels: {app: httpbin}}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
  selector: {app: httpbin}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: httpbin, namespace: default, labels: {app: httpbin, version: v1}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.app"]
  ports: [{name: http, containerPort: 8080, protocol: HTTP}]
  sidecar: true
---
"""


def manifests(certs: dict[str, KeyPair], ca_pem: bytes, client_ca_pem: bytes, backend_dir: pathlib.Path) -> str:
    httpbin_cert, httpbin_key = certs["httpbin"]
    mtls_cert, mtls_key = certs["mtls"]
    return f"""{HTTPBIN}apiVersion: v1
kind: Service
metadata: {{name: my-nginx, namespace: default, labels: {{run: my-nginx}}}}
spec:
  ports: [{{name: https, port: 443, targetPort: 8443, protocol: TCP}}]
  selector: {{run: my-nginx}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: my-nginx, namespace: default, labels: {{run: my-nginx}}}}
spec:
  command: ["python", "{backend_dir / 'backend.py'}"]
  env: {{CERT_FILE: "{backend_dir / 'nginx.crt'}", KEY_FILE: "{backend_dir / 'nginx.key'}"}}
  ports: [{{name: https, containerPort: 8443, protocol: TCP}}]
  sidecar: false
---
# a second version of the TLS server, the target of the mesh VirtualService's `tls` route for my-nginx
apiVersion: v1
kind: Service
metadata: {{name: my-nginx-v2, namespace: default, labels: {{run: my-nginx-v2}}}}
spec:
  ports: [{{name: https, port: 443, targetPort: 8443, protocol: TCP}}]
  selector: {{run: my-nginx-v2}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: my-nginx-v2, namespace: default, labels: {{run: my-nginx-v2}}}}
spec:
  command: ["python", "{backend_dir / 'backend.py'}"]
  env: {{CERT_FILE: "{backend_dir / 'nginx.crt'}", KEY_FILE: "{backend_dir / 'nginx.key'}", BODY: "nginx v2"}}
  ports: [{{name: https, containerPort: 8443, protocol: TCP}}]
  sidecar: false
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: sleep, namespace: default, labels: {{app: sleep}}}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
  sidecar: true
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-nginx-mesh, namespace: default}}
spec:
  hosts: [my-nginx]
  tls:
  - match: [{{port: 443, sniHosts: [my-nginx]}}]
    route: [{{destination: {{host: my-nginx-v2, port: {{number: 443}}}}}}]
---
# kubectl create -n istio-system secret tls httpbin-credential --key=httpbin.example.com.key --cert=...crt
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: httpbin-credential, namespace: istio-system}}
data: {{tls.crt: {b64(httpbin_cert + ca_pem)}, tls.key: {b64(httpbin_key)}}}
---
# kubectl create -n istio-system secret generic helloworld-credential --from-file=tls.key=... --from-file=ca.crt=...
apiVersion: v1
kind: Secret
metadata: {{name: mtls-credential, namespace: istio-system}}
data: {{tls.crt: {b64(mtls_cert)}, tls.key: {b64(mtls_key)}, ca.crt: {b64(client_ca_pem)}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: mygateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [httpbin.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [httpbin.example.com]
    tls: {{mode: SIMPLE, credentialName: httpbin-credential, minProtocolVersion: TLSV1_2}}
  - port: {{number: 443, name: https-mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, credentialName: mtls-credential}}
  - port: {{number: 9443, name: https-mesh, protocol: HTTPS}}
    hosts: [mesh.example.com]
    tls: {{mode: ISTIO_MUTUAL}}
  - port: {{number: 443, name: tls-passthrough, protocol: TLS}}
    hosts: [nginx.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.example.com, mtls.example.com, mesh.example.com]
  gateways: [mygateway]
  http:
  - match: [{{uri: {{prefix: /status}}}}, {{uri: {{prefix: /delay}}}}]
    route: [{{destination: {{host: httpbin, port: {{number: 8000}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [nginx.example.com]
  gateways: [mygateway]
  tls:
  - match: [{{port: 443, sniHosts: [nginx.example.com]}}]
    route: [{{destination: {{host: my-nginx, port: {{number: 443}}}}}}]
"""


class Pki:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.server_ca = server_ca = make_ca("example.com")
        client_ca = make_ca("client.example.com")
        self.ca_pem = server_ca[0].public_bytes(serialization.Encoding.PEM)
        self.client_ca_pem = client_ca[0].public_bytes(serialization.Encoding.PEM)
        self.certs = {"httpbin": issue(server_ca, "httpbin.example.com"), "mtls": issue(server_ca, "mtls.example.com"),
                      "nginx": issue(server_ca, "nginx.example.com"), "client": issue(client_ca, "client", True),
                      "stranger": issue(make_ca("stranger"), "client", True)}
        for name, (cert, key) in self.certs.items():
            (root / f"{name}.crt").write_bytes(cert)
            (root / f"{name}.key").write_bytes(key)
            (root / f"{name}.key").chmod(0o600)
        (root / "ca.pem").write_bytes(self.ca_pem)

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    (root / "backend.py").write_text(TLS_BACKEND)
    return Pki(root)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("gateway-tls-config")
    (config / "secure-ingress.yaml").write_text(manifests(pki.certs, pki.ca_pem, pki.client_ca_pem, pki.root))
    m = RunningMesh(str(tmp_path_factory.mktemp("gateway-tls-state")), dirs=[str(config)])
    try:
        yield m
    finally:
        m.stop()


def https(mesh: RunningMesh, pki: Pki, host: str, path: str, *, cert: str = "", ca: str = "ca.pem",
          insecure: bool = False) -> subprocess.CompletedProcess[str]:
    """curl --resolve host:8443:<gateway ip> --cacert ca.pem https://host:8443/path, printing the status code."""
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "--resolve", f"{host}:8443:{mesh.gateway_ip}", "--noproxy", "*"]
    args += ["-k"] if insecure else ["--cacert", pki.path(ca)]
    if cert:
        args += ["--cert", pki.path(f"{cert}.crt"), "--key", pki.path(f"{cert}.key")]
    return subprocess.run([*args, f"https://{host}:8443{path}"], capture_output=True, text=True, timeout=30)


def eventually_code(mesh: RunningMesh, pki: Pki, host: str, path: str, want: str, **kw: object) -> None:
    last: list[subprocess.CompletedProcess[str]] = []

    def ok() -> bool:
        r = https(mesh, pki, host, path, **kw)  # type: ignore[arg-type]
        last[:] = [r]
        return r.stdout == want

    try:
        wait_for(ok, timeout=60, interval=0.5, what=f"https://{host}{path} to answer {want}")
    except BaseException:
        r = last[0] if last else None
        raise AssertionError(f"last: {r and (r.stdout, r.stderr)}\n{mesh.output()[-4000:]}") from None


@needs_curl
def test_simple_tls_with_credential_name_answers_418(mesh: RunningMesh, pki: Pki) -> None:
    """The task's check: `curl -v -HHost:httpbin.example.com --resolve ... --cacert example.com.crt
    https://httpbin.example.com/status/418` shows the teapot, over a certificate from the Secret."""
    eventually_code(mesh, pki, "httpbin.example.com", "/status/418", "418")
    # the certificate the gateway serves is the one in the Secret (issued for httpbin.example.com)
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    with socket.create_connection((mesh.gateway_ip, 8443), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="httpbin.example.com") as tls:
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert peer.public_bytes(serialization.Encoding.PEM) == pki.certs["httpbin"][0]
        assert tls.version() in ("TLSv1.2", "TLSv1.3")  # minProtocolVersion: TLSV1_2


@needs_curl
def test_mutual_tls_requires_a_client_certificate_from_the_ca(mesh: RunningMesh, pki: Pki) -> None:
    """MUTUAL: the task's curl without --cert fails the handshake; with the client certificate it gets 418; a
    certificate from another CA is refused too."""
    eventually_code(mesh, pki, "mtls.example.com", "/status/418", "418", cert="client")
    no_cert = https(mesh, pki, "mtls.example.com", "/status/418")
    assert no_cert.stdout == "000" and no_cert.returncode != 0, (no_cert.stdout, no_cert.stderr)
    stranger = https(mesh, pki, "mtls.example.com", "/status/418", cert="stranger")
    assert stranger.stdout == "000" and stranger.returncode != 0, (stranger.stdout, stranger.stderr)


@needs_curl
def test_passthrough_reaches_the_tls_server_by_sni(mesh: RunningMesh, pki: Pki) -> None:
    """SNI passthrough: the gateway does not terminate; the client sees the backend's own certificate and page."""
    eventually_code(mesh, pki, "nginx.example.com", "/", "200")
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    with socket.create_connection((mesh.gateway_ip, 8443), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="nginx.example.com") as tls:
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert peer.public_bytes(serialization.Encoding.PEM) == pki.certs["nginx"][0]
        tls.sendall(b"GET / HTTP/1.1\r\nHost: nginx.example.com\r\n\r\n")
        body = b""
        while chunk := tls.recv(4096):
            body += chunk
    assert body.endswith(b"Welcome to nginx!")


@needs_curl
def test_https_redirect_answers_301(mesh: RunningMesh, pki: Pki) -> None:
    """httpsRedirect on the HTTP server: 301 to the https URL (Envoy's require_tls: ALL)."""
    def redirected() -> bool:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--noproxy", "*",
                            "-H", "Host: httpbin.example.com", f"{mesh.gateway_url()}/status/418"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout == "301 https://httpbin.example.com/status/418"
    wait_for(redirected, timeout=60, interval=0.5, what="the 301 redirect")


REDIRECT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-moved, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [mygateway]
  http:
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /status/418, derivePort: FROM_REQUEST_PORT}
"""


@needs_curl
def test_a_redirect_on_the_tls_server_derives_https_without_443(mesh: RunningMesh, pki: Pki,
                                                                tmp_path: pathlib.Path) -> None:
    """Istio's ApplyRedirect on a TLS server (RouteOptions.IsTLS): the scheme defaults to https, so the derived port
    443 (the server's) is the scheme's default and not rewritten: the Location keeps the authority the client sent
    (here :8443, where the embedded gateway binds port 443). Taking http as the scheme, the port was rewritten to
    :443, where nothing listens."""
    mesh.apply_text(tmp_path, "moved", REDIRECT)
    try:
        def location() -> str:
            r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--max-time",
                                "10", "--resolve", f"httpbin.example.com:8443:{mesh.gateway_ip}", "--noproxy", "*",
                                "--cacert", pki.path("ca.pem"), "https://httpbin.example.com:8443/moved"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout if r.stdout.startswith("301") else ""
        got = wait_for(location, timeout=60, interval=0.5, what="the redirect on the HTTPS server")
        assert got == "301 https://httpbin.example.com:8443/status/418", got
    finally:
        mesh.delete_text(tmp_path, "moved")


def test_no_gap_reported_and_no_key_logged(mesh: RunningMesh, pki: Pki) -> None:
    """The Gateway and the tls VirtualService are translated: no accepted-not-enforced note for them; and no log
    of the mesh (control plane, agents, Envoys) carries a private key, in PEM or base64."""
    out = mesh.output()
    assert "Gateway default/mygateway: accepted, not enforced" not in out
    assert "VirtualService default/nginx: accepted, not enforced" not in out
    secrets = [k for name in ("httpbin", "mtls") for k in (pki.certs[name][1].splitlines()[1].decode(),
                                                             b64(pki.certs[name][1])[:40])]
    logs = [p for p in pathlib.Path(mesh.state_dir).rglob("*.log") if p.is_file()]
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(s in text for s in secrets), log


@needs_curl
def test_sidecar_follows_the_tls_route_of_a_tls_port(mesh: RunningMesh, pki: Pki) -> None:
    """A client in the mesh (sleep, through its sidecar's proxy port) reaching https://my-nginx:443 is sent by the
    mesh VirtualService's `tls` route (sniHosts my-nginx) to my-nginx-v2; TLS stays end to end (the backend's
    certificate, verified by the client)."""
    r = mesh.cli("get", "workloads", "-n", "default", "-o", "json", check=True)
    [sleep] = [w for w in json.loads(r.stdout) if w["workload"] == "sleep"]
    address = sleep["address"]

    def body() -> str:
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-x", f"http://{address}:15001", "--cacert", pki.path("ca.pem"),
             "--connect-to", "nginx.example.com:443:my-nginx.default.svc.cluster.local:443",
             "https://nginx.example.com/"], capture_output=True, text=True, timeout=30)
        return out.stdout
    wait_for(lambda: body() == "nginx v2", timeout=60, interval=0.5, what="the tls route to my-nginx-v2")


def mesh_client_context(mesh: RunningMesh, tmp_path: pathlib.Path) -> ssl.SSLContext:
    """A TLS client with a workload certificate from the mesh's own CA (SPIFFE ID of default/sleep), trusting the
    mesh root: what another mesh workload presents to an ISTIO_MUTUAL server."""
    [root_file] = list(pathlib.Path(mesh.state_dir).rglob("ca/root-cert.pem"))
    root = x509.load_pem_x509_certificate(root_file.read_bytes())
    ca_key = serialization.load_pem_private_key((root_file.parent / "ca-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/sleep")]), critical=True)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "w.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "w.key").write_bytes(_pem_key(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # a workload certificate names a SPIFFE ID, not a DNS name
    ctx.load_verify_locations(cadata=root.public_bytes(serialization.Encoding.PEM).decode())
    ctx.load_cert_chain(str(tmp_path / "w.crt"), str(tmp_path / "w.key"))
    return ctx


def get_status(ctx: ssl.SSLContext, ip: str, host: str) -> int:
    with socket.create_connection((ip, 9443), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET /status/418 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = tls.recv(64)
    return int(head.split()[1])


def test_istio_mutual_at_the_gateway_takes_mesh_certificates(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """ISTIO_MUTUAL: the gateway presents its own workload certificate (the agent's SDS `default`) and requires a
    client certificate from the mesh CA (`ROOTCA`); without one the handshake fails."""
    ctx = mesh_client_context(mesh, tmp_path)
    last: list[object] = []

    def answered() -> bool:
        try:
            last[:] = [get_status(ctx, mesh.gateway_ip, "mesh.example.com")]
        except (OSError, ValueError, IndexError) as e:
            last[:] = [e]
        return last == [418]
    wait_for(answered, timeout=60, interval=0.5, what=f"418 over ISTIO_MUTUAL (last: {last})")
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname, bare.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError, IndexError, ValueError)):
        get_status(bare, mesh.gateway_ip, "mesh.example.com")


def served_certificate(mesh: RunningMesh, pki: Pki, host: str) -> bytes:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    with socket.create_connection((mesh.gateway_ip, 8443), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").public_bytes(
            serialization.Encoding.PEM)


def test_rotating_the_secret_reaches_the_gateway(mesh: RunningMesh, pki: Pki,
                                                 tmp_path: pathlib.Path) -> None:
    """`kubectl apply` of a new httpbin-credential: the gateway serves the new certificate (pushed over ADS as
    the SDS secret kubernetes://httpbin-credential), without a restart; last, as it changes the served cert."""
    cert, key = pki.certs["rotated"] = issue(pki.server_ca, "httpbin.example.com")
    (tmp_path / "secret.yaml").write_text(f"""apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: httpbin-credential, namespace: istio-system}}
data: {{tls.crt: {b64(cert)}, tls.key: {b64(key)}}}
""")
    assert served_certificate(mesh, pki, "httpbin.example.com") == pki.certs["httpbin"][0]
    mesh.cli("apply", "-f", str(tmp_path / "secret.yaml"), check=True)
    wait_for(lambda: served_certificate(mesh, pki, "httpbin.example.com") == cert, timeout=60, interval=0.5,
             what="the rotated certificate")
    eventually_code(mesh, pki, "httpbin.example.com", "/status/418", "418")
