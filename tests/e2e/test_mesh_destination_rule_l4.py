"""DestinationRule connection-level settings through real Envoy: `proxyProtocol` (the upstream sees the client's
address in a PROXY protocol header) and `tunnel` (outbound TCP carried in HTTP CONNECT / POST to the rule's host).

Everything "outside" runs in this test on one loopback address no mesh process uses: a server that reads the PROXY
header, a TCP echo server, and a real Envoy that terminates CONNECT and POST tunnels for one authority only
(`target.example.test:7000`) and logs each tunnel's method and authority. ServiceEntries make them mesh services.
"""

from __future__ import annotations

import json
import pathlib
import random
import socket
import socketserver
import struct
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.processes import die_with_parent, envoy_binary, free_port
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TARGET = "target.example.test:7000"

MESH = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pp}
spec:
  hosts: [pp-v1.example.test, pp-v2.example.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {http: {PP_PORT}}}]
---
# the tunnel's target: its own endpoint is a port nothing listens on, so only a tunnel reaches the echo server
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: target}
spec:
  hosts: [target.example.test]
  ports: [{number: 7000, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {tcp: {CLOSED_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: target-post}
spec:
  hosts: [target-post.example.test]
  ports: [{number: 7001, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {tcp: {CLOSED_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tunnel-proxy}
spec:
  hosts: [tunnel-proxy.example.test]
  ports: [{number: 3128, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {tcp: {TUNNEL_PORT}}, labels: {proxy: corp}}]
---
# Istio's DestinationRule reference (TunnelSettings): connections routed to the tunnel proxy go in a CONNECT (or
# POST) tunnel to targetHost:targetPort
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: target}
spec:
  hosts: [target.example.test]
  tcp: [{route: [{destination: {host: tunnel-proxy.example.test, port: {number: 3128}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: target-post}
spec:
  hosts: [target-post.example.test]
  tcp: [{route: [{destination: {host: tunnel-proxy.example.test, subset: post, port: {number: 3128}}}]}]
---
# the sidecar's own TCP listeners for the targets (Istio's explicit egress listeners: tcp_proxy, as a captured
# sidecar's outbound TCP listeners), beside its HTTP proxy
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep}
spec:
  workloadSelector: {labels: {app: sleep}}
  egress:
  - port: {number: 7000, protocol: TCP, name: tcp}
    hosts: [./target.example.test]
  - port: {number: 7001, protocol: TCP, name: tcp-post}
    hosts: [./target-post.example.test]
  - hosts: ["./*"]
"""

PROXY_PROTOCOL = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp-v1}
spec: {host: pp-v1.example.test, trafficPolicy: {proxyProtocol: {version: V1}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp-v2}
spec: {host: pp-v2.example.test, trafficPolicy: {proxyProtocol: {version: V2}}}
"""

TUNNEL = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunnel-proxy}
spec:
  host: tunnel-proxy.example.test
  trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: target.example.test, targetPort: 7000}}
  subsets:
  - name: post
    labels: {proxy: corp}
    trafficPolicy: {tunnel: {protocol: POST, targetHost: target.example.test, targetPort: 7000}}
"""


class _ProxyProtocolHTTP(socketserver.StreamRequestHandler):
    """Reads a PROXY protocol header (v1 or v2, or none) and one HTTP request; answers JSON naming what it read."""

    def handle(self) -> None:
        seen: dict[str, Any] = {"version": None}
        head = self.rfile.peek(16)[:16]
        if head.startswith(b"PROXY "):
            parts = self.rfile.readline().decode().split()
            seen = {"version": 1, "source": parts[2], "destination": parts[3], "source_port": int(parts[4])}
        elif head.startswith(V2_SIGNATURE):
            fixed = self.rfile.read(16)
            length = struct.unpack("!H", fixed[14:16])[0]
            body = self.rfile.read(length)
            seen = {"version": 2}
            if fixed[13] == 0x11:  # TCP over IPv4
                src, dst, sport, _dport = struct.unpack("!4s4sHH", body[:12])
                seen.update(source=socket.inet_ntoa(src), destination=socket.inet_ntoa(dst), source_port=sport)
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        payload = json.dumps(seen).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(payload), payload))


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in iter(self.rfile.readline, b""):
            self.wfile.write(b"echo:" + line)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _terminator(address: str, port: int, echo_port: int, log: pathlib.Path) -> dict[str, Any]:
    """A static Envoy that terminates CONNECT, and POST (connect_config.allow_post), for TARGET only, tunnelling
    to the echo server; its access log line per tunnel: method and authority."""
    tunnel = {"cluster": "echo", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}
    post = {"cluster": "echo", "upgrade_configs": [{"upgrade_type": "CONNECT",
                                                     "connect_config": {"allow_post": True}}]}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "terminator",
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log), "log_format": {"text_format_source": {
                "inline_string": "%REQ(:METHOD)% %REQ(:AUTHORITY)% %RESPONSE_CODE%\n"}}}}],
        "route_config": {"virtual_hosts": [{"name": "target", "domains": [TARGET], "routes": [
            {"match": {"connect_matcher": {}}, "route": tunnel},
            {"match": {"prefix": "/"}, "route": post}]}]},
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "terminator", "address": {"socket_address": {"address": address,
                                                                                "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{"name": "echo", "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
                "cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": address, "port_value": echo_port}}}}]}]}}],
        },
    }


class Outside:
    """The servers outside the mesh, on one random loopback address."""

    def __init__(self, root: pathlib.Path) -> None:
        self.address = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}.253"
        self.pp = _Server((self.address, 0), _ProxyProtocolHTTP)
        self.echo = _Server((self.address, 0), _Echo)
        for srv in (self.pp, self.echo):
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.tunnel_port = free_port(self.address)
        self.closed_port = free_port(self.address)
        self.log = root / "terminator.log"
        self.log.touch()
        (root / "terminator.json").write_text(json.dumps(
            _terminator(self.address, self.tunnel_port, self.echo.server_address[1], self.log)))
        self.out = (root / "terminator.out").open("wb")
        self.envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(root / "terminator.json"), "--disable-hot-restart", "--concurrency", "1",
             "-l", "warning"], stdout=self.out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        wait_for(lambda: _connects(self.address, self.tunnel_port), timeout=60, interval=0.2,
                 what="the CONNECT terminator's listener")

    def tunnels(self) -> list[str]:
        """`METHOD AUTHORITY STATUS` of each tunnel the terminator finished."""
        return self.log.read_text().splitlines()

    def close(self) -> None:
        self.envoy.terminate()
        try:
            self.envoy.wait(10)
        except subprocess.TimeoutExpired:
            self.envoy.kill()
            self.envoy.wait()
        self.out.close()
        for srv in (self.pp, self.echo):
            srv.shutdown()
            srv.server_close()


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outside]:
    o = Outside(tmp_path_factory.mktemp("outside"))
    try:
        yield o
    finally:
        o.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, outside: Outside) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("l4-config")
    (config / "mesh.yaml").write_text(MESH.replace("{ADDRESS}", outside.address)
                                      .replace("{PP_PORT}", str(outside.pp.server_address[1]))
                                      .replace("{CLOSED_PORT}", str(outside.closed_port))
                                      .replace("{TUNNEL_PORT}", str(outside.tunnel_port)))
    with RunningMesh(str(tmp_path_factory.mktemp("l4-state")), dirs=[str(config)]) as m:
        yield m


def _sleep_address(mesh: RunningMesh) -> str:
    inst = find_instance(MeshState.load(mesh.state_dir), "sleep", "default")
    assert inst is not None
    return inst.address


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _get_from(mesh: RunningMesh, client: str, host: str) -> dict[str, Any] | None:
    """GET http://host/ through sleep's sidecar (its HTTP proxy listener) from a socket bound to `client`; the
    JSON answer, or None when there is none."""
    try:
        with socket.create_connection((_sleep_address(mesh), 15001), timeout=10, source_address=(client, 0)) as s:
            s.sendall(f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = _recv_until(s, b"\x00never")
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    try:
        return dict(json.loads(body))
    except ValueError:
        return None


def test_proxy_protocol_gives_the_upstream_the_clients_address(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Istio's TrafficPolicy.proxyProtocol ("the upstream connection ... the PROXY protocol header", V1 or V2;
    applyUpstreamProxyProtocol): the server behind the ServiceEntry reads a PROXY header of the rule's version that
    names the client's own address (the socket's, bound to an address only this test uses) as the source. Without
    the rule the server reads no header."""
    client = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}.77"
    before = wait_for(lambda: _get_from(mesh, client, "pp-v1.example.test"), timeout=60, interval=0.5,
                      what="pp-v1 through the sidecar")
    assert before == {"version": None}, before
    mesh.apply_text(tmp_path, "proxy-protocol", PROXY_PROTOCOL)
    try:
        for host, version in (("pp-v1.example.test", 1), ("pp-v2.example.test", 2)):
            seen = wait_for(lambda h=host, v=version: (r := _get_from(mesh, client, h)) and r["version"] == v and r,
                            timeout=60, interval=0.5, what=f"a PROXY v{version} header at {host}")
            assert seen["source"] == client and seen["destination"] == _sleep_address(mesh), seen
    finally:
        mesh.delete_text(tmp_path, "proxy-protocol")
    wait_for(lambda: _get_from(mesh, client, "pp-v1.example.test") == {"version": None}, timeout=60, interval=0.5,
             what="no PROXY header once the rule is gone")


def _echo_via_listener(address: str, port: int) -> bytes:
    try:
        with socket.create_connection((address, port), timeout=5) as s:
            s.sendall(b"ping\n")
            return _recv_until(s, b"\n")
    except OSError:
        return b""


def _echo_via_connect(address: str, authority: str) -> bytes:
    """CONNECT `authority` through the sidecar's HTTP proxy listener, then one line through the tunnel."""
    try:
        with socket.create_connection((address, 15001), timeout=5) as s:
            s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            head = _recv_until(s, b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return b""
            s.sendall(b"ping\n")
            return _recv_until(s, b"\n")
    except OSError:
        return b""


def test_tunnel_carries_outbound_tcp_in_connect_and_post(mesh: RunningMesh, outside: Outside,
                                                         tmp_path: pathlib.Path) -> None:
    """Istio's TrafficPolicy.tunnel (tunnelingconfig.Apply): TCP routed to the rule's host goes through it in an
    HTTP CONNECT (or POST, the subset's) naming `targetHost:targetPort`. The terminator only tunnels for
    target.example.test:7000, so the echo answers only through a tunnel that names it; it logs each tunnel's method.
    Proven on the sidecar's TCP listener (tcp_proxy, as captured sidecars and gateways) for both protocols and on
    its HTTP proxy's CONNECT (the client's CONNECT forwarded, naming the target). Without the rule: no answer."""
    sleep = _sleep_address(mesh)
    wait_for(lambda: _connects(sleep, 7000), timeout=60, interval=0.5, what="the sidecar's port 7000 listener")
    before = _echo_via_listener(sleep, 7000)  # raw TCP to the terminator: no tunnel, its 400, no echo
    assert before.startswith(b"HTTP/1.1 400"), before
    mesh.apply_text(tmp_path, "tunnel", TUNNEL)
    try:
        wait_for(lambda: _echo_via_listener(sleep, 7000) == b"echo:ping\n", timeout=60, interval=0.5,
                 what="TCP through a CONNECT tunnel")
        wait_for(lambda: any(t.startswith(f"CONNECT {TARGET} 200") for t in outside.tunnels()), timeout=30,
                 interval=0.2, what="the terminator's CONNECT log line")
        assert _echo_via_listener(sleep, 7001) == b"echo:ping\n"
        wait_for(lambda: any(t.startswith(f"POST {TARGET} 200") for t in outside.tunnels()), timeout=30,
                 interval=0.2, what="the terminator's POST log line")
        connects = sum(t.startswith("CONNECT") for t in outside.tunnels())
        assert _echo_via_connect(sleep, "target.example.test:7000") == b"echo:ping\n"
        wait_for(lambda: sum(t.startswith(f"CONNECT {TARGET} 200") for t in outside.tunnels()) > connects,
                 timeout=30, interval=0.2, what="the HTTP proxy's CONNECT forwarded to the terminator")
    finally:
        mesh.delete_text(tmp_path, "tunnel")
    wait_for(lambda: _echo_via_listener(sleep, 7000).startswith(b"HTTP/1.1 400"), timeout=60, interval=0.5,
             what="no tunnel once the rule is gone")
