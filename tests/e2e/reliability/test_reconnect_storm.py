"""Reliability (issue 13): a reconnect storm of lean ADS clients (the control-plane benchmark's, bench/controlplane/
clients.py: one gRPC connection each, ACKing everything as Envoy does) all connecting at once, twice (connect,
close, connect again), while a real sidecar carries steady traffic and web's route changes every 250 ms from the
moment a storm starts until every lean client has synced. 100 clients here, 500 with SAILMESH_RELIABILITY_FULL=1.
The control plane stays responsive: every lean client syncs (the push throttle refuses some streams at first:
they reconnect with back-off, as Envoy does), every route change reaches the real sidecar, no request fails.
The route changes' latencies (written -> first served) are reported, not asserted (no timing goals in tests)."""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.e2e.reliability.support import Traffic, address, report, start_mesh, virtual_service

ROOT = pathlib.Path(__file__).resolve().parents[3]
CLIENTS = 500 if os.environ.get("SAILMESH_RELIABILITY_FULL") else 100
CHANGE_EVERY_S = 0.25
# the full runs last longer than the suite's 300 s per test (pyproject's pytest-timeout)
pytestmark = pytest.mark.timeout(600 if CLIENTS > 100 else 300)


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


def latencies(written: list[tuple[str, float]], traffic: Traffic) -> list[float]:
    """Per route written: until it (or a route written after it, which replaced it first) was first served."""
    out = []
    for i, (_, at) in enumerate(written):
        seen = [traffic.first_seen[r] for r, _ in written[i:] if r in traffic.first_seen]
        if seen:
            out.append(min(seen) - at)
    return out


def metric(mesh_http_port: int, name: str) -> float:
    """A counter or histogram sum/count from the control plane's open /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh_http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_reconnect_storm_while_a_real_sidecar_gets_route_changes(tmp_path: pathlib.Path) -> None:
    mesh, vs = start_mesh(tmp_path, extra=("--xds-plaintext",))  # the lean clients speak plaintext ADS
    target = f"127.0.0.1:{mesh.xds_port}"
    written: list[tuple[str, float]] = []
    storms: list[str] = []
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        workers: list[Worker] = []
        try:
            traffic.wait_route("v1")
            for storm in range(2):
                worker = Worker()  # a worker process ends with its clients' close
                workers.append(worker)
                replies: list[dict[str, Any]] = []
                began = time.monotonic()
                connect = threading.Thread(target=lambda r=replies, w=worker: r.append(w.call(
                    {"cmd": "connect", "target": target, "proxies": _proxies(CLIENTS), "timeout": 240})))
                connect.start()
                while connect.is_alive():  # a route change every 250 ms until every lean client synced
                    route = f"s{storm + 1}-{len(written)}"
                    written.append((route, time.monotonic()))
                    vs.write_text(virtual_service(route))
                    connect.join(timeout=CHANGE_EVERY_S)
                (reply,) = replies
                assert not reply["errors"], f"storm {storm + 1}: lean clients not synced: {reply['errors']}"
                assert len(reply["synced"]) == CLIENTS
                retried = sum(n for n, _ in reply["retries"].values())
                storms.append(f"storm {storm + 1}: all synced after {max(reply['synced'].values()) - began:.1f} s, "
                              f"{retried} reconnects")
                traffic.wait_route(written[-1][0], timeout=60)
                assert worker.call({"cmd": "close"}) == {"ok": True}  # all of them go away at once
                traffic.wait_requests(50)
        finally:
            for w in workers:
                w.stop()
            traffic.stop()
        lat = sorted(latencies(written, traffic))
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        refused = metric(mesh.http_port, "sailmesh_xds_streams_rate_limited")
        queued = metric(mesh.http_port, "pilot_proxy_queue_time_count")
        report(f"reconnect storm: {CLIENTS} lean ADS clients at once, twice ({'; '.join(storms)}; "
               f"{refused:.0f} streams refused by the rate limit, {queued:.0f} pushes queued by the throttle); "
               f"{len(written)} route changes during the storms, written -> served p50 / p99 / max "
               f"{statistics.median(lat) * 1000:.0f} / {p99 * 1000:.0f} / {lat[-1] * 1000:.0f} ms", traffic)
        assert traffic.failures == [] and traffic.refused == [], traffic.summary()
        assert len(lat) == len(written), "a route change never reached the real sidecar"
        assert set(traffic.routes) <= {"v1", *(r for r, _ in written)}
