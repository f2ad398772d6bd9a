"""Two control-plane replicas (`sailmesh controlplane --kubeconfig`, separate processes) on one real API server:
both serve xDS, the Lease holder alone writes (the webhook writer: Istio's istio-ca-root-cert ConfigMap per
namespace, its field manager named in managedFields), and killing the leader (SIGKILL: no release) moves the
Lease to the other replica and moves its proxy there, with no failed request under steady traffic through a real
Envoy (issue 14).

The Envoy's xds-grpc cluster lists the leader at priority 0 and the other replica at priority 1, with a TCP health
check, so it starts on the leader and fails over when the leader dies (in Kubernetes the istiod Service spreads
proxies; this makes the test deterministic). Envoy keeps serving its last config while it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing.envoy_proc import ads_bootstrap, running_envoy
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.kube_node import routable_pod_block
from sailmesh.testing.waiting import await_for, random_loopback_block
from tests.e2e import kube_support as ks

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)
NS = "kt-rep"
LEASE = "sailmesh-controlplane-leader"
LEASE_S = 3.0  # renew deadline 2 s, retry 0.4 s (client-go's proportions)

APP = "---".join([ks.web_service(NS), ks.httpbin_pod("web-1", NS)])


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    http: int
    xds: int
    state: pathlib.Path
    log: pathlib.Path

    def identity(self) -> str:
        found = re.search(r"leader election: (\S+) leads", self.log.read_text(errors="replace"))
        return found.group(1) if found else ""

    def sync_status(self) -> str:
        token = (self.state / "api-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/debug/syncz",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(resp.read().decode())


@contextlib.contextmanager
def replicas(kube: KubeCluster, tmp: pathlib.Path, count: int) -> Iterator[list[Replica]]:
    out: list[Replica] = []
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(count):
            state, http, xds = tmp / f"cp{i}", free_port(), free_port()
            log = tmp / f"cp{i}.log"
            cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(kube.kubeconfig),
                   "--http-port", str(http), "--xds-tls-port", "0", "--ca-port", "0", "--xds-plaintext",
                   "--xds-port", str(xds), "--state-dir", str(state), "--leader-lease-seconds", str(LEASE_S),
                   "--webhook-port", "0"]
            with log.open("wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            out.append(Replica(f"cp{i}", proc, http, xds, state, log))
        yield out
    finally:
        for r in out:
            if r.proc.poll() is None:
                r.proc.terminate()
        for r in out:
            try:
                r.proc.wait(20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()


def ready(r: Replica) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{r.http}/ready", timeout=2) as resp:
        return resp.status == 200


async def lease_holder(kube: KubeCluster) -> str:
    got = await asyncio.to_thread(kube.kubectl, "get", "lease", LEASE, "-n", "istio-system", "-o", "json",
                                  check=False)
    return str(json.loads(got.stdout)["spec"].get("holderIdentity") or "") if got.returncode == 0 else ""


def failover_bootstrap(node_id: str, first: int, second: int) -> dict[str, Any]:
    boot = ads_bootstrap(node_id, first)
    [xds] = boot["static_resources"]["clusters"]
    endpoint = xds["load_assignment"]["endpoints"][0]
    standby = json.loads(json.dumps(endpoint))
    standby["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = second
    standby["priority"] = 1
    xds["load_assignment"]["endpoints"].append(standby)
    xds["health_checks"] = [{"timeout": "0.5s", "interval": "0.25s", "no_traffic_interval": "0.25s",
                             "unhealthy_threshold": 1, "healthy_threshold": 1, "tcp_health_check": {}}]
    return boot


@dataclass
class Traffic:
    """Requests through the Envoy's outbound HTTP proxy listener, one after another, until stopped."""

    proxy: str
    url: str
    codes: list[int | str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.proxy}))
        while not self.stop.is_set():
            try:
                with opener.open(self.url, timeout=5) as resp:
                    self.codes.append(resp.status)
            except urllib.error.HTTPError as e:
                self.codes.append(e.code)
            except OSError as e:
                self.codes.append(type(e).__name__)
            self.stop.wait(0.02)


@pytest.mark.timeout(900)  # a cluster start plus several meshed processes on a loaded 2-core machine
async def test_two_replicas_serve_xds_the_leader_writes_and_a_killed_leader_fails_no_request(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    block = routable_pod_block() or random_loopback_block()
    for ns in ("istio-system", NS):
        await ks.kubectl(kube, "create", "namespace", ns, check=False)
    await ks.wait_service_account(kube, NS)
    async with ks.running_node(kube, "node-rep", block, tmp_path / "node"):
        await ks.kubectl(kube, "apply", "-f", "-", input=APP)
        with replicas(kube, tmp_path, 1) as [first]:
            await await_for(lambda: asyncio.to_thread(ready, first), timeout=90, what="replica 0 ready")
            await await_for(lambda: _async(bool(first.identity())), timeout=30, what="replica 0 leads")
            with replicas(kube, tmp_path / "b", 1) as [second]:
                await await_for(lambda: asyncio.to_thread(ready, second), timeout=90, what="replica 1 ready")
                leader = first.identity()
                assert await lease_holder(kube) == leader and not second.identity()

                # only the leader writes: the ConfigMap's field manager is the leader's identity
                assert await await_for(lambda: _written_in(kube, NS), timeout=30,
                                       what="istio-ca-root-cert in the namespace") == [leader]

                node_id = f"sidecar~{block}.200~client.{NS}~{NS}.svc.cluster.local"
                boot = failover_bootstrap(node_id, first.xds, second.xds)
                async with running_envoy(boot, tmp_path / "envoy"):
                    await await_for(lambda: asyncio.to_thread(lambda: node_id in first.sync_status()), timeout=30,
                                    what="the Envoy on the leader's xDS")
                    traffic = Traffic(f"http://{block}.200:15001", f"http://web.{NS}.svc.cluster.local:8000/get")

                    async def flowing() -> bool:
                        ok = await asyncio.to_thread(_one, traffic)
                        return ok == 200

                    await await_for(flowing, timeout=60, what="200 through the Envoy")
                    runner = threading.Thread(target=traffic.run, daemon=True)
                    runner.start()
                    try:
                        await await_for(lambda: _async(len(traffic.codes) >= 20), timeout=30,
                                        what="steady traffic")
                        first.proc.send_signal(signal.SIGKILL)  # no release: the Lease must expire
                        first.proc.wait(10)
                        await await_for(lambda: asyncio.to_thread(lambda: node_id in second.sync_status()),
                                        timeout=30, what="the Envoy moved to the surviving replica")
                        await await_for(lambda: _async(bool(second.identity())), timeout=30,
                                        what="the survivor takes the Lease")
                        assert await lease_holder(kube) == second.identity() != leader
                        await ks.kubectl(kube, "create", "namespace", "kt-rep-later")
                        assert await await_for(
                            lambda: _written_in(kube, "kt-rep-later"), timeout=30,
                            what="the new leader writes the new namespace's ConfigMap") == [second.identity()]
                        seen = len(traffic.codes)
                        await await_for(lambda: _async(len(traffic.codes) >= seen + 20), timeout=30,
                                        what="more traffic after the failover")
                    finally:
                        traffic.stop.set()
                        await asyncio.to_thread(runner.join, 10)
                    failed = [c for c in traffic.codes if c != 200]
                    print(f"\n{len(traffic.codes)} requests through the Envoy during the failover, failed: {failed}")
                    assert not failed


def _one(traffic: Traffic) -> int | str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": traffic.proxy}))
    try:
        with opener.open(traffic.url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError as e:
        return type(e).__name__


async def _written_in(kube: KubeCluster, ns: str) -> list[str]:
    got = await ks.kubectl(kube, "get", "configmap", "istio-ca-root-cert", "-n", ns, "--show-managed-fields",
                        "-o", "json", check=False)
    return [m["manager"] for m in json.loads(got)["metadata"]["managedFields"]] if got else []


async def _async(value: bool) -> bool:
    return value
