"""Certificate rotation under steady traffic, with the issue's one-minute TTL (the CA's real floor, not a test
override), and a control-plane restart: real Envoys, real TLS, real gRPC.

Two sidecars: sleep in foo (client) -> httpbin in bar (server), ISTIO_MUTUAL by DestinationRule, the server STRICT
by PeerAuthentication (so a request that got through went over Istio mTLS), and `maxRequestsPerConnection: 1` so
that every request opens a new upstream connection: every request is a fresh TLS handshake in which both sides
present and verify whatever certificate and trust bundle they hold at that instant. Requests go from the test
through the client's sidecar (its HTTP proxy listener on :15001, as `sailmesh exec` sets HTTP_PROXY) the whole
time; not one may fail while both ends rotate at least twice, and while the control plane is killed and restarted
by the platform (its root and join tokens are on disk, so agents renew against the restarted one).
"""

from __future__ import annotations

import datetime
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sailmesh.platform.state import MeshState
from sailmesh.testing.envoy_stats import envoy_certs, envoy_stat
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e

TTL_S = 60  # the "down to a minute", and the CA's floor: agents renew at half life, about every 30 s

CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {name: foo}
---
apiVersion: v1
kind: Namespace
metadata: {name: bar}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: bar}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
  selector: {app: httpbin}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: httpbin, namespace: bar, labels: {app: httpbin, version: v1}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.app"]
  serviceAccount: httpbin
  ports: [{name: http, containerPort: 8080, protocol: HTTP}]
  replicas: 1
  sidecar: true
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, namespace: foo, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
  serviceAccount: sleep
  replicas: 1
  sidecar: true
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: bar}
spec:
  host: httpbin.bar.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    connectionPool:
      http: {maxRequestsPerConnection: 1}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: bar}
spec:
  mtls: {mode: STRICT}
"""


@dataclass
class Traffic:
    """Requests sent through the client's sidecar from a thread until stopped; every outcome is kept."""

    proxy: str
    url: str = "http://httpbin.bar:8000/ip"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self) -> None:
        c = http.client.HTTPConnection(self.proxy, 15001, timeout=10)
        try:
            c.request("GET", self.url)
            r = c.getresponse()
            body = r.read()
            if r.status == 200:
                self.ok += 1
            else:
                self.failures.append(f"{time.strftime('%H:%M:%S')} HTTP {r.status} {body[:200]!r}")
        except (OSError, http.client.HTTPException) as e:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
        finally:
            c.close()

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()
            self.stop.wait(0.05)  # about 15 requests a second on this machine: steady, not a load test


def admin_certs(address: str) -> list[dict[str, Any]]:
    """Envoy's loaded leaf certificates (SDS `default` and the xDS connection's) as its admin /certs reports them."""
    return [entry["cert_chain"][0] for entry in envoy_certs(address) if entry.get("cert_chain")]


@dataclass
class Watch:
    """The serials each sidecar's Envoy loaded, sampled until stopped; every sample's expiry is checked."""

    addresses: dict[str, str]
    serials: dict[str, list[str]] = field(default_factory=dict)
    expired: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        for name, address in self.addresses.items():
            try:
                leaves = admin_certs(address)
            except (OSError, ValueError, http.client.HTTPException):
                continue
            seen = self.serials.setdefault(name, [])
            for leaf in leaves:
                if leaf["serial_number"] not in seen:
                    seen.append(leaf["serial_number"])
                expires = datetime.datetime.fromisoformat(leaf["expiration_time"].replace("Z", "+00:00"))
                if expires <= now:
                    self.expired.append(f"{name}: serial {leaf['serial_number']} expired {expires}")

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(1.0)

    def rotations(self, name: str) -> int:
        return max(len(self.serials.get(name, [])) - 1, 0)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    cfg = tmp_path_factory.mktemp("rotation-config")
    (cfg / "mesh.yaml").write_text(CONFIG)
    m = RunningMesh(str(tmp_path_factory.mktemp("rotation")), dirs=[str(cfg)], extra=["--cert-ttl", str(TTL_S)])
    try:
        yield m
    finally:
        m.stop()


def addresses(mesh: RunningMesh) -> dict[str, str]:
    state = MeshState.load(mesh.state_dir)
    return {i.workload: i.address for i in state.instances if i.workload in ("sleep", "httpbin")}


@pytest.fixture(scope="module")
def running(mesh: RunningMesh) -> Iterator[tuple[Traffic, Watch]]:
    """Traffic and the certificate watch, started once the path works, for both tests of this module."""
    addr = addresses(mesh)
    probe = Traffic(addr["sleep"])

    def works() -> bool:
        before = probe.ok
        probe.one()
        return probe.ok > before

    wait_for(works, timeout=60, interval=0.2, what="sleep.foo -> httpbin.bar through both sidecars (mTLS)")
    traffic, watch = Traffic(addr["sleep"]), Watch(addr)
    threads = [threading.Thread(target=traffic.run, daemon=True), threading.Thread(target=watch.run, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield traffic, watch
    finally:
        traffic.stop.set()
        watch.stop.set()
        for t in threads:
            t.join(timeout=15)


def handshakes(address: str) -> int:
    """Upstream TLS handshakes the client's sidecar made to httpbin.bar (Envoy's cluster ssl stat)."""
    return envoy_stat(address, "cluster.outbound|8000||httpbin.bar.svc.cluster.local.ssl.handshake")


def test_one_minute_certificates_rotate_on_both_ends_without_a_failed_request(
        mesh: RunningMesh, running: tuple[Traffic, Watch]) -> None:
    """A rotation of each end here, a second one after the control plane's restart (next test): each end rotates
    twice under traffic in the module (renewal at half of a 60 s lifetime), with the restart in between."""
    traffic, watch = running
    addr = addresses(mesh)
    shakes = handshakes(addr["sleep"])
    wait_for(lambda: all(watch.rotations(n) >= 1 for n in ("sleep", "httpbin")), timeout=90, interval=1,
             what=f"a rotation of both sidecars' certificates (seen: {watch.serials})")
    assert traffic.failures == [], f"{len(traffic.failures)} of {traffic.ok + len(traffic.failures)} failed"
    assert watch.expired == []
    assert traffic.ok > 100
    # Each request was its own upstream TLS connection (the handshake count follows the requests).
    assert handshakes(addr["sleep"]) - shakes >= 100
    print(f"\nrotation: {traffic.ok} requests, 0 failed; serials {watch.serials}")


def test_control_plane_restart_keeps_certificates_valid_and_traffic_flowing(
        mesh: RunningMesh, running: tuple[Traffic, Watch]) -> None:
    traffic, watch = running
    root_before = Path(mesh.state_dir, "controlplane", "root-cert.pem").read_text()
    state = MeshState.load(mesh.state_dir)
    (cp,) = [p for p in state.processes if p.role == "controlplane"]
    rotations = {n: watch.rotations(n) for n in ("sleep", "httpbin")}
    sent = traffic.ok
    os.kill(cp.pid, signal.SIGKILL)  # a crash: no graceful stop; the platform restarts it
    def restarted() -> bool:
        return any("controlplane" in line and "ready again" in line for line in mesh.output().splitlines())

    wait_for(restarted, timeout=60, interval=0.2, what="the platform to restart the control plane")
    # The restarted control plane kept its root (state dir): every proxy's certificate still chains to it, and
    # every proxy renews against it (a rotation of each end after the restart).
    assert Path(mesh.state_dir, "controlplane", "root-cert.pem").read_text() == root_before
    wait_for(lambda: all(watch.rotations(n) > rotations[n] for n in rotations), timeout=90, interval=1,
             what=f"a rotation of both ends after the restart (seen: {watch.serials})")
    assert all(watch.rotations(n) >= 2 for n in rotations), watch.serials  # twice each in the module
    assert traffic.failures == [], f"{len(traffic.failures)} of {traffic.ok + len(traffic.failures)} failed"
    assert watch.expired == []
    assert traffic.ok > sent
    print(f"\nrestart: {traffic.ok} requests in all, 0 failed; serials {watch.serials}")
