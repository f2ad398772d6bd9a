"""AuthorizationPolicy through a real Envoy: the generated RBAC / ext_authz filters decide real HTTP requests and
TCP connections on a sidecar's inbound listeners.

The rules matched (istio.io, "Authorization Policy" reference and the security tasks):
- "If there are no ALLOW policies for the workload, allow the request"; `spec: {}` (ALLOW without rules) allows
  nothing: HTTP 403 with the body `RBAC: access denied` (the HTTP traffic task's allow-nothing step).
- Evaluation order CUSTOM, DENY, ALLOW: a DENY wins over an ALLOW of the same request.
- AUDIT never decides a request.
- TCP: a denied connection is closed; an ALLOW rule that uses HTTP-only fields on a TCP port matches nothing
  (Istio model.go checkError; istio.io "TCP traffic" task).
- CUSTOM (istio.io "External Authorization" task): only requests matching the policy are sent to the provider.
"""

from __future__ import annotations

import dataclasses
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
from collections.abc import Iterator

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from sailmesh.api import meshconfig
from sailmesh.generate.common import pack
from sailmesh.processes import envoy_binary, free_port
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.testing.waiting import random_loopback_block
from tests.e2e.test_generate_envoy import run_envoy, static_bootstrap
from tests.unit.test_generate_support import make_snapshot, resources, service, sidecar, workload

pytestmark = pytest.mark.e2e

DENIED = b"RBAC: access denied"


class App(http.server.ThreadingHTTPServer):
    """httpbin-like: answers every method with the path and the request headers as JSON."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                data = body.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__((host, port), Handler)


class ExtAuthz(http.server.ThreadingHTTPServer):
    """An HTTP ext_authz server as in Istio's sample: allows when `x-ext-authz: allow`, else 403; counts checks."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        self.checked: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _check(self) -> None:
                server.checked.append(self.path)
                allow = self.headers.get("x-ext-authz") == "allow"
                data = b"" if allow else b"denied by ext_authz for " + self.path.encode()
                self.send_response(200 if allow else 403)
                self.send_header("x-ext-authz-check-result", "allowed" if allow else "denied")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _check

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__((host, port), Handler)


class Echo(socketserver.ThreadingTCPServer):
    """A TCP echo server (the app behind a TCP port)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while data := self.request.recv(4096):
                    self.request.sendall(data)

        super().__init__((host, port), Handler)


@pytest.fixture
def servers() -> Iterator[list[socketserver.BaseServer]]:
    started: list[socketserver.BaseServer] = []
    yield started
    for s in started:
        s.shutdown()
        s.server_close()


@pytest.fixture
def envoys(tmp_path: pathlib.Path) -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def serve(servers: list[socketserver.BaseServer], s: socketserver.BaseServer) -> None:
    threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    servers.append(s)


def request(ip: str, port: int, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        c.request(method, path, body=b"x" if method == "POST" else None, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tcp_echo(ip: str, port: int) -> bytes:
    """Send a line and read until the echo or the close; b"" means the connection was closed on us."""
    with socket.create_connection((ip, port), timeout=10) as s:
        s.sendall(b"ping\n")
        got = b""
        try:
            while len(got) < 5:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        return got


@dataclasses.dataclass
class Pod:
    """One sidecar'd workload `httpbin` (HTTP 9080, TCP 7070) with its apps, on its own loopback address."""

    block: str
    proxy: ProxyView
    app_port: int
    echo_port: int
    authz_port: int
    ext: ExtAuthz


@pytest.fixture
def pod(servers: list[socketserver.BaseServer]) -> Pod:
    block = random_loopback_block()
    ip = f"{block}.1"
    app_port, echo_port, authz_port = free_port(ip), free_port(ip), free_port(f"{block}.5")
    serve(servers, App(ip, app_port))
    serve(servers, Echo(ip, echo_port))
    ext = ExtAuthz(f"{block}.5", authz_port)
    serve(servers, ext)
    proxy = sidecar("httpbin-v1-0", ip=ip, app_ports={9080: app_port, 7070: echo_port}, app="httpbin", version="v1")
    return Pod(block, proxy, app_port, echo_port, authz_port, ext)


def mesh(pod: Pod, policies: str, mesh_config: str = "") -> MeshSnapshot:
    snap = make_snapshot(
        resources(policies) if policies else [],
        [service("httpbin", ports=[(9080, "HTTP"), (7070, "TCP")]),
         service("ext-authz", ports=[(pod.authz_port, "HTTP")])],
        [workload("httpbin-v1-0", pod.proxy.ip, app="httpbin", version="v1"),
         workload("ext-authz-0", f"{pod.block}.5", app="ext-authz")])
    if mesh_config:
        snap = dataclasses.replace(snap, mesh_config=meshconfig.from_mapping(yaml.safe_load(mesh_config)))
    return snap


def start_envoy(tmp: pathlib.Path, envoys: list[subprocess.Popen], snap: MeshSnapshot, proxy: ProxyView) -> None:
    """A fresh Envoy with the proxy's generated config; the previous one (same listeners) is stopped first."""
    while envoys:
        old = envoys.pop()
        old.kill()
        old.wait()
    tmp.mkdir()
    proc, _admin = run_envoy(tmp, static_bootstrap(snap, proxy, free_port()))
    envoys.append(proc)


def test_allow_nothing_then_allow_by_path_deny_by_method_and_header(tmp_path: pathlib.Path, pod: Pod,
                                                                    envoys: list[subprocess.Popen]) -> None:
    ip = pod.proxy.ip
    # no policy: everything is allowed
    start_envoy(tmp_path / "none", envoys, mesh(pod, ""), pod.proxy)
    assert request(ip, 9080, "/headers")[0] == 200

    # allow-nothing (istio.io HTTP traffic task): every request answers 403 `RBAC: access denied`
    allow_nothing = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n" \
                    "metadata: {name: allow-nothing, namespace: default}\nspec: {}\n"
    start_envoy(tmp_path / "nothing", envoys, mesh(pod, allow_nothing), pod.proxy)
    for path in ("/", "/headers", "/ip"):
        assert request(ip, 9080, path) == (403, DENIED)

    policies = allow_nothing + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get-paths, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/ip", "/headers*", "*/suffix"], methods: [GET, POST]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST], paths: ["/headers*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-header, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - when: [{key: "request.headers[x-token]", values: ["admin", "root-*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: default}
spec:
  action: AUDIT
  rules: [{to: [{operation: {paths: ["/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules: [{}]
"""
    start_envoy(tmp_path / "rules", envoys, mesh(pod, policies), pod.proxy)
    # ALLOW by path: exact, prefix (`x*`) and suffix (`*x`); anything else is not allowed
    assert request(ip, 9080, "/ip")[0] == 200
    assert request(ip, 9080, "/headers/more")[0] == 200
    assert request(ip, 9080, "/a/suffix")[0] == 200
    assert request(ip, 9080, "/status/200") == (403, DENIED)
    assert request(ip, 9080, "/ip", method="DELETE") == (403, DENIED)  # method not in the ALLOW rule
    # DENY by method: POST /headers is denied although the ALLOW rule matches it (DENY is evaluated first)
    assert request(ip, 9080, "/headers", method="POST") == (403, DENIED)
    assert request(ip, 9080, "/ip", method="POST")[0] == 200
    # DENY by header: exact and prefix values
    assert request(ip, 9080, "/ip", headers={"x-token": "admin"}) == (403, DENIED)
    assert request(ip, 9080, "/ip", headers={"x-token": "root-1"}) == (403, DENIED)
    status, body = request(ip, 9080, "/ip", headers={"x-token": "guest"})
    assert status == 200 and json.loads(body)["headers"]["x-token"] == "guest"


def test_tcp_deny_closes_the_connection(tmp_path: pathlib.Path, pod: Pod, envoys: list[subprocess.Popen]) -> None:
    ip = pod.proxy.ip
    start_envoy(tmp_path / "none", envoys, mesh(pod, ""), pod.proxy)
    assert tcp_echo(ip, 7070) == b"ping\n"

    deny_port = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-tcp, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {ports: ["7070"]}}]}]
"""
    start_envoy(tmp_path / "deny", envoys, mesh(pod, deny_port), pod.proxy)
    assert tcp_echo(ip, 7070) == b""  # closed by the network RBAC filter
    assert request(ip, 9080, "/ip")[0] == 200  # the HTTP port is another port: not denied

    # an ALLOW rule with only HTTP fields matches nothing on TCP (Istio drops the rule there), so the TCP port
    # allows nothing, while HTTP requests that match it pass
    http_only = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""
    start_envoy(tmp_path / "allow-http", envoys, mesh(pod, http_only), pod.proxy)
    assert tcp_echo(ip, 7070) == b""
    assert request(ip, 9080, "/ip")[0] == 200
    assert request(ip, 9080, "/ip", method="POST") == (403, DENIED)


def test_custom_sends_only_matching_requests_to_the_ext_authz_server(tmp_path: pathlib.Path, pod: Pod,
                                                                     envoys: list[subprocess.Popen]) -> None:
    ip = pod.proxy.ip
    provider = f"""
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: {pod.authz_port}
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToUpstreamOnAllow: [x-ext-authz-check-result]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
"""
    custom = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules: [{to: [{operation: {paths: ["/headers"]}}]}]
"""
    start_envoy(tmp_path / "custom", envoys, mesh(pod, custom, provider), pod.proxy)
    status, body = request(ip, 9080, "/headers", headers={"x-ext-authz": "deny"})
    assert status == 403 and body == b"denied by ext_authz for /headers"
    status, body = request(ip, 9080, "/headers", headers={"x-ext-authz": "allow"})
    assert status == 200
    assert json.loads(body)["headers"]["x-ext-authz-check-result"] == "allowed"  # headersToUpstreamOnAllow
    checked = list(pod.ext.checked)
    assert checked == ["/headers", "/headers"]
    assert request(ip, 9080, "/ip", headers={"x-ext-authz": "deny"})[0] == 200  # not matched: never checked
    assert pod.ext.checked == checked

    # an unknown provider fails closed: the CUSTOM rules become DENY rules
    start_envoy(tmp_path / "bad", envoys, mesh(pod, custom.replace("sample-ext-authz-http", "missing"), provider),
                pod.proxy)
    assert request(ip, 9080, "/headers", headers={"x-ext-authz": "allow"}) == (403, DENIED)
    assert request(ip, 9080, "/ip")[0] == 200


def test_envoy_accepts_every_key_istio_translates(tmp_path: pathlib.Path, conformance: pathlib.Path) -> None:
    """Istio's widest inputs (every source, operation and when key; CUSTOM over HTTP; TCP rules) pass Envoy's
    validate mode as generated for a sidecar with an HTTP and a TCP port."""
    builder = conformance / "authz-builder"
    block = random_loopback_block()
    proxy = sidecar("httpbin-v1-0", ns="foo", ip=f"{block}.1", app_ports={9080: 41000, 7070: 41001},
                    app="httpbin", version="v1")
    provider = """
extensionProviders:
- name: default
  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000, timeout: 1s, failOpen: true}
"""
    for name in ("http/allow-full-rule-in.yaml", "http/audit-full-rule-in.yaml", "http/custom-simple-http-in.yaml",
                 "tcp/allow-both-http-tcp-in.yaml", "tcp/deny-both-http-tcp-in.yaml", "http/dry-run-mix-in.yaml"):
        snap = make_snapshot(
            resources(builder / name),
            [service("httpbin", "foo", [(9080, "HTTP"), (7070, "TCP")]), service("ext-authz", "foo", [(9000, "GRPC")])],
            [workload("httpbin-v1-0", proxy.ip, "foo", app="httpbin", version="v1")])
        snap = dataclasses.replace(snap, mesh_config=meshconfig.from_mapping(yaml.safe_load(provider)))
        boot = static_bootstrap(snap, proxy, free_port())
        filters = [f.name for li in boot.static_resources.listeners for c in li.filter_chains for f in c.filters]
        assert any("rbac" in n for n in filters) or "custom" in name, (name, filters)
        path = tmp_path / (name.replace("/", "-") + ".json")
        path.write_text(json_format.MessageToJson(boot))
        r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                            "-l", "warning"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (name, r.stdout[-3000:], r.stderr[-3000:])


def _certs(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    """A test CA and certificates with Istio's SPIFFE URI SANs (the stand-in for branch i9-mtls's SDS secrets)."""
    now, minutes, hour = datetime.datetime.now(datetime.UTC), datetime.timedelta(minutes=5), datetime.timedelta(hours=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - minutes)
          .not_valid_after(now + hour)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": tmp / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, uri in (("httpbin", "spiffe://cluster.local/ns/foo/sa/httpbin"),
                      ("sleep-foo", "spiffe://cluster.local/ns/foo/sa/sleep"),
                      ("sleep-bar", "spiffe://cluster.local/ns/bar/sa/sleep")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - minutes).not_valid_after(now + hour)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
                .sign(ca_key, hashes.SHA256()))
        out[name] = tmp / f"{name}.pem"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[name + "-key"] = tmp / f"{name}-key.pem"
        out[name + "-key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return out


def test_principals_and_namespaces_match_the_peer_certificate(tmp_path: pathlib.Path, pod: Pod,
                                                              envoys: list[subprocess.Popen]) -> None:
    """Principal and namespace rules read the SPIFFE ID of the client certificate. The inbound listener's TLS is
    added here by hand (static certificates); branch i9-mtls generates it from PeerAuthentication over SDS."""
    certs = _certs(tmp_path)
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
  - from: [{source: {namespaces: [bar]}}]
    to: [{operation: {paths: [/ip]}}]
"""
    boot = static_bootstrap(mesh(pod, policy), pod.proxy, free_port())
    tls = tls_pb2.DownstreamTlsContext(require_client_certificate={"value": True})
    tls.common_tls_context.tls_certificates.add(
        certificate_chain=base_pb2.DataSource(filename=str(certs["httpbin"])),
        private_key=base_pb2.DataSource(filename=str(certs["httpbin-key"])))
    tls.common_tls_context.validation_context.trusted_ca.filename = str(certs["ca"])
    [inbound] = [li for li in boot.static_resources.listeners if li.address.socket_address.port_value == 9080]
    inbound.filter_chains[0].transport_socket.name = "envoy.transport_sockets.tls"
    inbound.filter_chains[0].transport_socket.typed_config.CopyFrom(pack(tls))
    (tmp_path / "mtls").mkdir()
    proc, _ = run_envoy(tmp_path / "mtls", boot)
    envoys.append(proc)

    def call(client: str, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(certs[client]), str(certs[client + "-key"]))
        c = http.client.HTTPSConnection(pod.proxy.ip, 9080, timeout=10, context=ctx)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    assert call("sleep-foo", "/headers")[0] == 200  # principal cluster.local/ns/foo/sa/sleep
    assert call("sleep-bar", "/headers") == (403, DENIED)  # another principal, and not /ip
    assert call("sleep-bar", "/ip")[0] == 200  # namespace bar, path /ip
