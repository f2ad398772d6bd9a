"""Reliability (issue 13): every sidecar SIGTERMed one by one while traffic flows. A web replica's sidecar drains:
its endpoint leaves the client's EDS at once (the platform sees the agent's drain marker) while its listeners still
accept, so no request fails. The client's own sidecar drains its in-flight requests, then is gone until the
platform restarts it: the only expected failures are connections the client's app could not open to its own
sidecar in that window: refused, or (a connection racing its Envoy's exit) reset before any response — never an
HTTP error, and nothing outside that window."""

from __future__ import annotations

import os
import pathlib
import signal
import time

from tests.e2e.platform_support import recorded
from tests.e2e.reliability.support import Traffic, address, ready_again, report, restarts, start_mesh


def test_every_sidecar_sigtermed_one_by_one_under_traffic(tmp_path: pathlib.Path) -> None:
    mesh, _vs = start_mesh(tmp_path)
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        windows: list[tuple[float, float]] = []
        try:
            traffic.wait_requests(50)
            for name in ("web-0.default.sidecar", "web-1.default.sidecar", "client-0.default.sidecar"):
                before, pid = restarts(mesh, "agent", name), recorded(mesh.state_dir)[name]["pid"]
                start = time.monotonic()
                os.kill(pid, signal.SIGTERM)
                ready_again(mesh, "agent", name, pid, before)
                windows.append((start, time.monotonic()))
                traffic.wait_requests(50)
        finally:
            traffic.stop()
        report("every sidecar SIGTERMed one by one (web-0, web-1, client-0)", traffic)
        print("windows (SIGTERM -> ready again):", windows)
        try:
            _check(mesh.state_dir, traffic, windows)
        except AssertionError:  # what each process logged: which hop failed, when the endpoint left the EDS
            for log in sorted(pathlib.Path(mesh.state_dir, "logs").glob("*.log")):
                print(f"--- {log.name} (last 40 lines)")
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
            raise


def _check(state_dir: str, traffic: Traffic, windows: list[tuple[float, float]]) -> None:
    client_start, client_end = windows[2]
    # while a web replica's sidecar drained: nothing failed
    assert [f for f in traffic.failures if not client_start <= f[0] <= client_end] == [], traffic.summary()
    # while the client's own sidecar was going and coming back: refusals, and connection resets at its exit
    assert all(client_start <= t <= client_end for t in traffic.refused), traffic.summary()
    assert not [f for f in traffic.failures if f[1].startswith("HTTP")], traffic.summary()
    assert "drained: no request in flight" in "".join(
        open(os.path.join(state_dir, "logs", f"{n}.default.sidecar.log"), encoding="utf-8").read()
        for n in ("web-0", "web-1"))
