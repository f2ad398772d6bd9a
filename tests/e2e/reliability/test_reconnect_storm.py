"""Reliability (issue 13): a reconnect storm of lean ADS clients (the control-plane benchmark's, bench/controlplane/
clients.py: one gRPC connection each, ACKing everything as Envoy does) all connecting at once, twice (connect,
close, connect again), while a real sidecar carries steady traffic and gets a route change during each storm.
100 clients here, 500 with SAILMESH_RELIABILITY_FULL=1. The control plane stays responsive: every lean client
syncs, the real sidecar's route change arrives, no request fails. The route change's latency is reported."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any

from tests.e2e.reliability.support import Traffic, address, report, start_mesh, virtual_service

ROOT = pathlib.Path(__file__).resolve().parents[3]
CLIENTS = 500 if os.environ.get("SAILMESH_RELIABILITY_FULL") else 100


def _proxies(n: int) -> list[dict[str, Any]]:
    return [{"id": f"sidecar~127.251.{i // 250}.{i % 250 + 1}~lean-{i}.default~default.svc.cluster.local",
             "metadata": {"NAMESPACE": "default", "NAME": f"lean-{i}", "LABELS": json.dumps({"app": "lean"}),
                          "SERVICE_ACCOUNT": "default"}} for i in range(n)]


class Worker:
    """One process of lean clients, driven over stdin/stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.controlplane.clients"], cwd=str(ROOT),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the lean client worker exited ({self.proc.poll()}) during {cmd['cmd']}"
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def test_reconnect_storm_while_a_real_sidecar_gets_a_route_change(tmp_path: pathlib.Path) -> None:
    mesh, vs = start_mesh(tmp_path, extra=("--xds-plaintext",))  # the lean clients speak plaintext ADS
    target = f"127.0.0.1:{mesh.xds_port}"
    latencies: list[float] = []
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        workers: list[Worker] = []
        try:
            traffic.wait_route("v1")
            for storm, route in enumerate(("v2", "v3")):
                worker = Worker()  # a worker process ends with its clients' close
                workers.append(worker)
                replies: list[dict[str, Any]] = []
                connect = threading.Thread(target=lambda r=replies, w=worker: r.append(w.call(
                    {"cmd": "connect", "target": target, "proxies": _proxies(CLIENTS), "timeout": 120})))
                connect.start()
                changed = time.monotonic()
                vs.write_text(virtual_service(route))
                traffic.wait_route(route, timeout=60)
                latencies.append(traffic.first_seen[route] - changed)
                connect.join(timeout=150)
                (reply,) = replies
                assert not reply["errors"], f"storm {storm + 1}: lean clients not synced: {reply['errors']}"
                assert len(reply["synced"]) == CLIENTS
                assert worker.call({"cmd": "close"}) == {"ok": True}  # all of them go away at once
                traffic.wait_requests(50)
        finally:
            for w in workers:
                w.stop()
            traffic.stop()
        report(f"reconnect storm: {CLIENTS} lean ADS clients connecting at once, twice; the real sidecar's route "
               f"change seen by traffic after {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}", traffic)
        assert traffic.failures == [] and traffic.refused == [], traffic.summary()
