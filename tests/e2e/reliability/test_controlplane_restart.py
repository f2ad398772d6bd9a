"""Reliability (issue 13): the control plane SIGKILLed under steady traffic through real sidecars, restarted by the
platform; then SIGKILLed again and restarted with a changed config. Envoys keep serving their last config while it
is gone: zero failed requests; after each restart the sidecars reconnect and follow new config."""

from __future__ import annotations

import os
import pathlib
import signal

from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import recorded
from tests.e2e.reliability.support import Traffic, address, ready_again, report, restarts, start_mesh, virtual_service

CP = "controlplane"


def test_control_plane_killed_and_restarted_then_restarted_with_changed_config(tmp_path: pathlib.Path) -> None:
    mesh, vs = start_mesh(tmp_path)
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        try:
            traffic.wait_route("v1")
            traffic.wait_requests(50)

            # 1. SIGKILL: the platform restarts it (after its 1 s back-off); the sidecars reconnect
            before, pid = restarts(mesh, CP, CP), recorded(mesh.state_dir)[CP]["pid"]
            os.kill(pid, signal.SIGKILL)
            ready_again(mesh, CP, CP, pid, before)
            traffic.wait_requests(50)
            vs.write_text(virtual_service("v2"))  # the new control plane pushes a change
            traffic.wait_route("v2")

            # 2. SIGKILL, and the config changes while it is down: the restarted one serves the new config
            before, pid = restarts(mesh, CP, CP), recorded(mesh.state_dir)[CP]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: f"controlplane {CP} exited with code -9" in mesh.output(), timeout=30)
            vs.write_text(virtual_service("v3"))
            ready_again(mesh, CP, CP, pid, before)
            traffic.wait_route("v3")
            traffic.wait_requests(50)
        finally:
            traffic.stop()
        report("control plane SIGKILLed twice (second time with a changed config)", traffic)
        assert traffic.failures == [] and traffic.refused == [], traffic.summary()
        assert set(traffic.routes) == {"v1", "v2", "v3"}
