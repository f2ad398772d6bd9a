"""Istio's TCP metrics of a long-lived connection grow while it is open (Istio reports TCP metrics every
`reportingInterval`, 5 s by default; here a Telemetry sets 1 s): a raw TCP connection through the client's
sidecar (HTTP CONNECT, the source reporter) to a TCP echo workload (its sidecar's tcp_proxy, the destination
reporter), checked on both :15020/stats/prometheus pages before and after the close."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_metrics import istio_samples, proxies

pytestmark = pytest.mark.e2e

ECHO = """import os, socket, threading
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
s = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])))
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# the tcp-echo Service and its workload (echo.py beside the config)
TCP_ECHO = """apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  selector: {app: tcp-echo}
  ports: [{name: tcp, port: 9000, targetPort: 9000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: tcp-echo, labels: {app: tcp-echo, version: v1}}
spec:
  command: ["python", "echo.py"]
  ports: [{name: tcp, containerPort: 9000, protocol: TCP}]
  readinessProbe: {tcpSocket: {port: 9000}}
---
"""
MESH = TCP_ECHO + """apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client, version: v1}}
spec:
  command: ["python", "echo.py"]
  ports: [{name: tcp, containerPort: 7000, protocol: TCP}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 1s
"""

# Runs in the client's environment (sailmesh exec): a CONNECT tunnel through its sidecar, then bytes echoed in
# two rounds, each released by a line on stdin, the connection open until stdin closes.
CLIENT = """import os, socket, sys, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
s = socket.create_connection((proxy.hostname, proxy.port))
s.sendall(b"CONNECT tcp-echo:9000 HTTP/1.1\\r\\nHost: tcp-echo:9000\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
for size in (1000, 500):
    sys.stdin.readline()
    s.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(s.recv(65536))
    print("echoed", size, flush=True)
sys.stdin.read()
s.close()
print("closed", flush=True)
"""

NAMES = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total",
         "istio_tcp_received_bytes_total")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    d = tmp_path_factory.mktemp("tcp-mesh-config")
    (d / "echo.py").write_text(ECHO)
    (d / "mesh.yaml").write_text(MESH)
    m = RunningMesh(str(tmp_path_factory.mktemp("tcp-mesh")), dirs=[str(d)])
    try:
        yield m
    finally:
        m.stop()


def tcp(ip: str, **match: str) -> tuple[float, float, float, float]:
    """(opened, closed, sent, received) summed over the series of one proxy whose labels include `match`."""
    s = istio_samples(ip)
    return tuple(sum(v for k, v in s.get(n, {}).items() if all(dict(k).get(a) == b for a, b in match.items()))
                 for n in NAMES)  # type: ignore[return-value]


def until(ip: str, match: dict[str, str], expected: tuple[float, ...], what: str) -> None:
    seen: list[object] = []

    def check() -> bool:
        seen[:] = [tcp(ip, **match)]
        return seen[0] == expected
    try:
        wait_for(check, timeout=30, interval=0.5, what=what)
    except Exception as e:
        raise AssertionError(f"{what}: last {seen} != {expected}; page: {istio_samples(ip)}") from e


def test_tcp_bytes_are_reported_while_the_connection_is_open(mesh: RunningMesh, tmp_path: Path) -> None:
    ip = proxies(mesh)
    echo, client = ip["tcp-echo-0"], ip["client-0"]
    # TCP has no metadata exchange (docs/observability.md): the client is known by its principal
    dst = {"reporter": "destination", "destination_workload": "tcp-echo", "connection_security_policy": "mutual_tls",
           "source_principal": "spiffe://cluster.local/ns/default/sa/default"}
    src = {"reporter": "source", "destination_service_name": "tcp-echo"}
    proc = subprocess.Popen([sys.executable, "-m", "sailmesh", "exec", "client", "--state-dir", mesh.state_dir,
                             "--", sys.executable, "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["echoed", "1000"]
        # open, 1000 bytes each way so far: reported by both sidecars, nothing closed yet
        until(echo, dst, (1, 0, 1000, 1000), "the destination reporter's bytes of the open connection")
        until(client, src, (1, 0, 1000, 1000), "the source reporter's bytes of the open tunnel")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["echoed", "500"]
        until(echo, dst, (1, 0, 1500, 1500), "the bytes growing before the close")
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "closed"
        # the close: one connection closed, and the totals stay exact (periodic reports are not counted twice)
        until(echo, dst, (1, 1, 1500, 1500), "the close")
        until(client, src, (1, 1, 1500, 1500), "the tunnel's close")
        labels = dict(next(k for k in istio_samples(echo)["istio_tcp_sent_bytes_total"]
                           if dict(k)["reporter"] == "destination"))
        assert labels["request_protocol"] == "tcp" and labels["destination_service_name"] == "tcp-echo"
        labels = dict(next(k for k in istio_samples(client)["istio_tcp_sent_bytes_total"]
                           if dict(k)["reporter"] == "source"))
        assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/default"
        assert labels["source_workload"] == "client" and labels["connection_security_policy"] == "unknown"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
