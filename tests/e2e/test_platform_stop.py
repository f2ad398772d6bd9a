"""Issue 13, stop: nothing is left behind after Ctrl-C, SIGTERM, or SIGKILL of the supervisor followed by
`sailmesh down`; `down` checks each recorded process's identity (pid + start time + command line) first."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from sailmesh.platform.state import MeshState, ProcessRecord, pid_alive
from sailmesh.processes import proc_cmdline, proc_start_time
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import alive, envoy_pids, mesh_dir, recorded, workload

MESH = (workload("client", "{SLEEPER}", ports=False), workload("web", "{APP}"))


def _down(state_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sailmesh", "down", "--state-dir", state_dir, *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_leave_nothing_behind(tmp_path: pathlib.Path, sig: signal.Signals) -> None:
    mesh = RunningMesh(str(tmp_path / "s"), dirs=[mesh_dir(tmp_path, *MESH)])
    try:
        pids = [p["pid"] for p in recorded(mesh.state_dir).values()] + envoy_pids(mesh.state_dir)
        assert len(pids) == 1 + 1 + 2 + 2 + 3  # control plane, gateway, 2 sidecars, 2 apps, 3 Envoys
        mesh.proc.send_signal(sig)
        assert mesh.proc.wait(timeout=120) == 0
        assert "stopped" in mesh.output()
        assert wait_for(lambda: not alive(pids), timeout=30, what="every process to exit")
    finally:
        mesh.stop()


def test_down_after_the_supervisor_was_killed_stops_everything(tmp_path: pathlib.Path) -> None:
    mesh = RunningMesh(str(tmp_path / "s"), dirs=[mesh_dir(tmp_path, *MESH)])
    try:
        records = recorded(mesh.state_dir)
        pids = [p["pid"] for p in records.values()] + envoy_pids(mesh.state_dir)
        assert all(p["start_time"] and p["cmdline"] for p in records.values())
        os.kill(mesh.proc.pid, signal.SIGKILL)
        mesh.proc.wait(timeout=30)
        r = _down(mesh.state_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "supervisor" in r.stdout and "is not running" in r.stdout
        assert "mesh stopped" in r.stdout
        assert wait_for(lambda: not alive(pids), timeout=30, what="every recorded process and Envoy to exit")
        assert not os.path.exists(os.path.join(mesh.state_dir, "mesh.json"))
    finally:
        mesh.stop()


def test_down_stops_recorded_processes_in_order_and_never_a_recycled_pid(tmp_path: pathlib.Path) -> None:
    """Processes without PR_SET_PDEATHSIG stand in for a mesh whose supervisor died: only `down` stops them."""
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    procs = {role: subprocess.Popen(sleep, start_new_session=True) for role in ("controlplane", "app", "agent")}
    stranger = subprocess.Popen(sleep, start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        wait_for(lambda: all(proc_cmdline(p.pid) == sleep for p in [*procs.values(), stranger]), timeout=30)
        records = [ProcessRecord(role, role, p.pid, "", "", proc_start_time(p.pid), proc_cmdline(p.pid))
                   for role, p in procs.items()]
        # a record whose pid now names another process (recycled): same pid, another start time
        records.append(ProcessRecord("old-app", "app", stranger.pid, "", "", proc_start_time(stranger.pid) - 1,
                                     proc_cmdline(stranger.pid)))
        sdir = str(tmp_path / "s")
        MeshState(supervisor_pid=dead.pid, api_url="http://127.0.0.1:1", xds_address="127.0.0.1:1",
                  processes=records).save(sdir)
        r = _down(sdir, "--grace", "10")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        order = [next(i for i, ln in enumerate(lines) if f"stopped {role} {role}" in ln)
                 for role in ("agent", "app", "controlplane")]
        assert order == sorted(order)  # proxies drain first, then apps, then the control plane
        assert f"left pid {stranger.pid} alone" in r.stdout
        for p in procs.values():
            p.wait(timeout=30)
        assert pid_alive(stranger.pid)
    finally:
        for p in [*procs.values(), stranger]:
            if p.poll() is None:
                p.kill()
                p.wait()
