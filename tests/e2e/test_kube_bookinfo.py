"""Bookinfo on the real kube-apiserver end to end (issue 14): `sailmesh install --profile demo`, Istio's own
platform-kube/bookinfo.yaml applied with kubectl into a namespace labelled istio-injection=enabled (the real
deployment/replicaset controllers make the pods, the webhook injects them), the test node runs the injected pods
(each sidecar a `sailmesh agent` proving its identity with its projected token) and the ingress gateway, then
bookinfo-gateway.yaml: /productpage answers 200 through the gateway, and virtual-service-all-v1.yaml (with
destination-rule-all.yaml) pins reviews to v1 as in the embedded mesh.

Then a control-plane replica is killed under load: two replicas (processes) serve the proxies behind the istiod
"Service" (tests/e2e/kube_service_lb.py: round robin over the replicas' xDS, CA and webhook ports, a killed
replica's endpoint skipped, as kube-proxy with the replica's endpoint gone), the agents speaking xDS over mutual
TLS with certificates of the replicas' shared CA (istio-ca-secret). The Lease holder is SIGKILLed while requests
flow through the ingress gateway; every proxy moves to the survivor and no request fails. The routing files of
Istio's request-routing and traffic-shifting tasks then change traffic on the survivor as in the embedded mesh:
virtual-service-reviews-test-v2.yaml (user jason on v2, everybody else on v1), virtual-service-reviews-50-v3.yaml
(a 50/50 split over 1,000 requests) and virtual-service-reviews-v3.yaml (all on v3).

The control plane runs as processes beside the cluster (the installed istiod Deployment is scaled to 0: the test
node cannot run an in-cluster control plane), on the webhook URL the install was given, as in
test_kube_admission.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import pathlib
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_pod import ControlPlaneAddresses
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.conftest import CONFORMANCE
from tests.e2e import kube_support as ks
from tests.e2e.kube_service_lb import forwarding

pytestmark = pytest.mark.e2e
BOOKINFO = CONFORMANCE / "bookinfo"
NS = "bookinfo"
SPLIT_N = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    # no Istio CRDs file: `sailmesh install` applies its own
    yield from ks.cluster_for(tmp_path_factory, istio_crds=False, needs=BOOKINFO / "platform-kube" / "bookinfo.yaml")


@dataclass
class Replica:
    """One control-plane process: its ports, process, state dir and log."""

    proc: subprocess.Popen[bytes]
    http: int
    xds: int
    ca: int
    webhook: int
    state: pathlib.Path
    log: pathlib.Path

    def leads(self) -> bool:
        return "leads (lease" in self.log.read_text(errors="replace")

    def proxies(self) -> set[str]:
        """The proxies connected to this replica (its /debug/syncz)."""
        token = (self.state / "api-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/debug/syncz",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return {p["proxy"] for p in json.loads(resp.read())}


@contextlib.contextmanager
def replica_process(kube: KubeCluster, workdir: pathlib.Path, webhook: int, name: str = "cp") -> Iterator[Replica]:
    http, xds, ca = free_port(), free_port(), free_port()
    state = workdir / f"{name}-state"
    cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(kube.kubeconfig), "--http-port",
           str(http), "--xds-tls-port", str(xds), "--ca-port", str(ca), "--webhook-port", str(webhook),
           "--state-dir", str(state), "--leader-lease-seconds", "3"]
    log = workdir / f"{name}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        yield Replica(proc, http, xds, ca, webhook, state, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def control_plane_process(kube: KubeCluster, workdir: pathlib.Path, webhook: int) -> Iterator[tuple[int, int, int]]:
    """One control plane: (HTTP, xDS, CA) ports."""
    with replica_process(kube, workdir, webhook) as r:
        yield r.http, r.xds, r.ca


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
        return resp.status == 200


def _patched(kube: KubeCluster) -> bool:
    m = json.loads(kube.kubectl("get", "mutatingwebhookconfiguration", "istio-sidecar-injector", "-o", "json").stdout)
    return all(h["clientConfig"].get("caBundle") for h in m["webhooks"])


def get(url: str, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str]:
    opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


def reviews_version(gateway: str, opener: urllib.request.OpenerDirector | None = None) -> str:
    """v1 (no ratings), v2 (black stars) or v3 (red stars), from productpage's reviews API (as test_mesh_bookinfo)."""
    status, body = get(f"{gateway}/api/v1/products/0/reviews", opener)
    assert status == 200, body
    rating = json.loads(body)["reviews"][0].get("rating")
    return "v1" if not rating else {"black": "v2", "red": "v3"}[rating["color"]]


async def pods_ready(kube: KubeCluster, namespace: str) -> list[str]:
    got = json.loads(await ks.kubectl(kube, "get", "pods", "-n", namespace, "-o", "json"))
    return [p["metadata"]["name"] for p in got["items"] if {c["type"]: c["status"] for c in p["status"].get(
        "conditions") or ()}.get("Ready") == "True"]


@pytest.mark.timeout(1500)  # a cluster start plus several meshed processes on a loaded 2-core machine
async def test_bookinfo_installed_injected_and_routed_on_the_api_server(cluster: KubeCluster,
                                                                        tmp_path: pathlib.Path) -> None:
    kube = cluster
    webhook, xds, ca = free_port(), free_port(), free_port()  # the istiod "Service" ports
    install = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "sailmesh", "install", "--profile", "demo", "--kubeconfig", str(kube.kubeconfig),
        "--webhook-url", f"https://127.0.0.1:{webhook}"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    await ks.kubectl(kube, "scale", "deployment", "istiod", "-n", "istio-system", "--replicas=0")
    with replica_process(kube, tmp_path, free_port(), "cp0") as first:
        await await_for(lambda: asyncio.to_thread(_ready, first.http), timeout=120, what="replica 0 ready")
        await await_for(lambda: _async(first.leads()), timeout=30, what="replica 0 leads")
        with replica_process(kube, tmp_path, free_port(), "cp1") as second:
            await await_for(lambda: asyncio.to_thread(_ready, second.http), timeout=120, what="replica 1 ready")
            replicas = [first, second]
            async with forwarding(webhook, [r.webhook for r in replicas]), \
                    forwarding(xds, [r.xds for r in replicas]) as xds_lb, forwarding(ca, [r.ca for r in replicas]):
                await await_for(lambda: asyncio.to_thread(_patched, kube), timeout=60, interval=0.3,
                                what="the injector's CA bundle patched")
                with ks.short_dir("kb-") as short:  # SDS sockets: short Unix paths
                    await run_bookinfo(kube, short, xds, ca, first, second)
                print(f"xDS connections per replica (xDS port: count): {xds_lb.connections}")


async def run_bookinfo(kube: KubeCluster, short: pathlib.Path, xds: int, ca: int, leader: Replica,
                       survivor: Replica) -> None:
    async with ks.running_node(kube, "node-bookinfo", random_loopback_block(), short) as node:
        node.control_plane = ControlPlaneAddresses(f"127.0.0.1:{xds}", f"127.0.0.1:{ca}")
        await ks.kubectl(kube, "create", "namespace", NS)
        await ks.kubectl(kube, "label", "namespace", NS, "istio-injection=enabled")
        await ks.wait_service_account(kube, NS)
        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "platform-kube" / "bookinfo.yaml"))

        async def all_ready() -> bool:
            return len(await pods_ready(kube, NS)) == 6 and bool(await pods_ready(kube, "istio-system"))

        await await_for(all_ready, timeout=300, interval=1.0,
                        what="the six Bookinfo pods (injected) and the ingress gateway Ready")
        pods = json.loads(await ks.kubectl(kube, "get", "pods", "-n", NS, "-o", "json"))["items"]
        assert all(any(c["name"] == "istio-proxy" for c in p["spec"].get("initContainers") or ())
                   for p in pods), "every Bookinfo pod injected with the native sidecar"
        gateway_ip = next(r.ip for (ns, name), r in node.pods.items()
                          if ns == "istio-system" and name.startswith("istio-ingressgateway"))
        gateway = f"http://{gateway_ip}:8080"  # the gateway Service's port 80 -> targetPort 8080

        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "bookinfo-gateway.yaml"))
        _, body = await await_for(lambda: _ok(gateway + "/productpage"), timeout=120, interval=0.5,
                                  what="/productpage 200 through the ingress gateway")
        assert "Comedy of Errors" in body
        # without routing rules reviews is balanced over v1, v2, v3 (Istio's task text); then one file pins it
        before = collections.Counter([await asyncio.to_thread(reviews_version, gateway) for _ in range(15)])
        assert len(before) >= 2, before

        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "destination-rule-all.yaml"))
        await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "virtual-service-all-v1.yaml"))
        await await_for(lambda: _only(gateway, "v1"), timeout=60, interval=0.5,
                        what="virtual-service-all-v1: reviews on v1 only")

        await kill_leader_under_load(kube, gateway, leader, survivor)
        await routing_files(kube, gateway)


async def kill_leader_under_load(kube: KubeCluster, gateway: str, leader: Replica, survivor: Replica) -> None:
    """SIGKILL the Lease holder while /productpage is requested through the gateway: no request fails."""
    everyone = await asyncio.to_thread(lambda: leader.proxies() | survivor.proxies())
    assert len(everyone) >= 7, everyone  # six sidecars and the ingress gateway (and the egress gateway)
    on_leader = await asyncio.to_thread(leader.proxies)
    print(f"\nproxies: {len(everyone)}, on the leader: {len(on_leader)}")
    traffic = Load(gateway + "/productpage")
    runner = threading.Thread(target=traffic.run, daemon=True)
    runner.start()
    try:
        await await_for(lambda: _async(len(traffic.codes) >= 20), timeout=60, what="steady traffic")
        leader.proc.send_signal(signal.SIGKILL)  # no release: the Lease must expire
        await asyncio.to_thread(leader.proc.wait, 10)
        await await_for(lambda: asyncio.to_thread(lambda: survivor.proxies() >= everyone), timeout=120,
                        interval=0.5, what="every proxy on the surviving replica")
        await await_for(lambda: _async(survivor.leads()), timeout=30, what="the survivor takes the Lease")
        seen = len(traffic.codes)
        await await_for(lambda: _async(len(traffic.codes) >= seen + 20), timeout=60,
                        what="more traffic after the failover")
    finally:
        traffic.stop.set()
        await asyncio.to_thread(runner.join, 15)
    failed = [c for c in traffic.codes if c != 200]
    print(f"{len(traffic.codes)} requests to /productpage through the gateway while the leader was killed; "
          f"failed: {len(failed)} {failed[:10]}")
    assert not failed


async def routing_files(kube: KubeCluster, gateway: str) -> None:
    """Istio's request-routing and traffic-shifting files, served by the surviving replica."""
    await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "virtual-service-reviews-test-v2.yaml"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "jason", "passwd": "x"}).encode()
    await asyncio.to_thread(lambda: opener.open(urllib.request.Request(gateway + "/login", data=form),
                                                timeout=10).read())

    def jason() -> str:
        return reviews_version(gateway, opener)

    await await_for(lambda: _async_call(jason, "v2"), timeout=60, interval=0.5, what="jason routed to reviews v2")
    assert [await asyncio.to_thread(jason) for _ in range(10)] == ["v2"] * 10
    assert await _only(gateway, "v1")  # everybody else still on v1

    await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "virtual-service-reviews-50-v3.yaml"))
    await await_for(lambda: _seen(gateway, "v3"), timeout=60, interval=0.5, what="some traffic on v3")
    counts = collections.Counter(await asyncio.to_thread(lambda: [reviews_version(gateway) for _ in range(SPLIT_N)]))
    print(f"virtual-service-reviews-50-v3.yaml over {SPLIT_N} requests: {dict(counts)}")
    assert set(counts) == {"v1", "v3"}, counts
    assert abs(counts["v3"] / SPLIT_N - 0.5) <= 0.065, counts  # 4 standard deviations at n=1,000

    await ks.kubectl(kube, "apply", "-n", NS, "-f", str(BOOKINFO / "virtual-service-reviews-v3.yaml"))
    await await_for(lambda: _only(gateway, "v3"), timeout=60, interval=0.5, what="reviews on v3 only")


@dataclass
class Load:
    """Requests one after another until stopped; each status code (or the exception's name)."""

    url: str
    codes: list[int | str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = get(self.url)
                self.codes.append(status)
            except OSError as e:
                self.codes.append(type(e).__name__)
            self.stop.wait(0.02)


async def _only(gateway: str, version: str, n: int = 10) -> bool:
    seen = collections.Counter([await asyncio.to_thread(reviews_version, gateway) for _ in range(n)])
    return seen == {version: n}


async def _seen(gateway: str, version: str, n: int = 20) -> bool:
    return version in [await asyncio.to_thread(reviews_version, gateway) for _ in range(n)]


async def _async_call(fn: Callable[[], str], want: str) -> bool:
    return await asyncio.to_thread(fn) == want


async def _async(value: bool) -> bool:
    return value


async def _ok(url: str) -> tuple[int, str] | None:
    status, body = await asyncio.to_thread(get, url)
    return (status, body) if status == 200 else None
