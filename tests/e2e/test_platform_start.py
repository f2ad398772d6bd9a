"""Issue 13, start: every port is checked before anything reports ready (no port reuse on any listener), and a
failure to start says its cause and fix on the terminal and exits non-zero."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from sailmesh.processes import free_port
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import random_loopback_block, wait_for
from tests.e2e.platform_support import get, mesh_dir, workload

CLIENT = workload("client", "{SLEEPER}", ports=False)
WEB = workload("web", "{APP}")


def test_a_second_control_plane_cannot_share_the_xds_port(tmp_path: pathlib.Path) -> None:
    """gRPC sets SO_REUSEPORT by default; with grpc.so_reuseport=0 the second bind of the xDS port (15012) fails."""
    xds, http1, http2, ca1, ca2 = free_port(), free_port(), free_port(), free_port(), free_port()

    def argv(http: int, ca: int, name: str) -> list[str]:
        return [sys.executable, "-m", "sailmesh", "controlplane", "--xds-tls-port", str(xds), "--http-port", str(http),
                "--ca-port", str(ca), "--state-dir", str(tmp_path / name)]

    first = subprocess.Popen(argv(http1, ca1, "first"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{http1}/ready")[0] == 200, timeout=60, what="first control plane")
        second = subprocess.run(argv(http2, ca2, "second"), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0, second.stderr
        assert f"127.0.0.1:{xds}" in second.stderr and "control plane failed to start" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_a_second_mesh_fails_fast_naming_the_other_mesh(tmp_path: pathlib.Path) -> None:
    d = mesh_dir(tmp_path, CLIENT, WEB)
    with RunningMesh(str(tmp_path / "first"), dirs=[d]) as first:
        block = random_loopback_block()
        second_dir = str(tmp_path / "second")
        r = subprocess.run([sys.executable, "-m", "sailmesh", "up", "-f", d, "--state-dir", second_dir,
                            "--base-ip", f"{block}.2", "--gateway-ip", f"{block}.1",
                            "--xds-port", str(free_port()), "--http-port", str(first.http_port)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0
        assert (f"address already in use on 127.0.0.1:{first.http_port} "
                f"(another mesh runs: `sailmesh down --state-dir {first.state_dir}`)") in r.stderr
        assert "ready" not in r.stdout  # nothing was started, so nothing reported ready
        assert not os.path.exists(os.path.join(second_dir, "mesh.json"))
        assert get(f"{first.api_url}/ready")[0] == 200  # the first mesh is untouched


def test_an_app_that_cannot_start_says_why_and_exits_nonzero(tmp_path: pathlib.Path) -> None:
    broken = workload("web", "{APP}", env='    FAIL: "missing setting DATABASE_URL"\n')
    d = mesh_dir(tmp_path, broken)
    block = random_loopback_block()
    r = subprocess.run([sys.executable, "-m", "sailmesh", "up", "-f", d, "--state-dir", str(tmp_path / "s"),
                        "--base-ip", f"{block}.2", "--gateway-ip", f"{block}.1",
                        "--xds-port", str(free_port()), "--http-port", str(free_port())],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode != 0
    assert "app web-0 exited with code 3" in r.stderr
    assert "boom: missing setting DATABASE_URL" in r.stderr  # the tail of the app's log, on the terminal
