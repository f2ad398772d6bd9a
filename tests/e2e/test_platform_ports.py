"""The control plane's ports at `sailmesh up`: a port left at 0 is bound by the control plane itself and read back from
its ready record, so no other process can take it between a pick and the bind; a port the user names is honoured, and
a taken one fails the start naming it and the option that moves it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import urllib.request

import pytest

from sailmesh import settings as settings_mod
from sailmesh.errors import PlatformError
from sailmesh.platform.local import LocalMesh
from sailmesh.platform.portplan import MeshOptions
from sailmesh.processes import PID_HEADER
from sailmesh.testing.waiting import random_loopback_block, wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _options(tmp_path: pathlib.Path, **ports: int) -> MeshOptions:
    (tmp_path / "cfg").mkdir(exist_ok=True)
    block = random_loopback_block()
    return MeshOptions(config_dirs=[str(tmp_path / "cfg")], state_dir=str(tmp_path / "state"),
                       gateway_ip=f"{block}.1", base_ip=f"{block}.2", ready_timeout=60, **ports)


def _squat(port: int, udp: bool = False) -> socket.socket:
    """Another process's socket on 127.0.0.1:port (a listener, or a bound UDP socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    if not udp:
        s.listen(1)
    return s


async def test_ports_decided_before_start_can_be_taken_and_up_still_starts(tmp_path: pathlib.Path) -> None:
    """Every control-plane port left at 0 (xDS mTLS, CA, HTTP API, DNS). Whatever port the supervisor holds for them
    before start() is taken by another process in the window before the control plane binds: the mesh must start
    anyway, on ports its control plane really bound. (Before: the supervisor picked them with free_port() in
    LocalMesh(), and a port taken meanwhile refused the mesh: `address already in use`.)"""
    mesh = LocalMesh(_options(tmp_path, http_port=0, xds_tls_port=0, ca_port=0, dns_port=0),
                     settings_mod.load(), say=lambda _s: None)
    o = mesh.opts
    before = {"http": o.http_port, "xds": o.xds_tls_port, "ca": o.ca_port, "dns": o.dns_port}
    squatters = [_squat(p, udp=(name == "dns")) for name, p in before.items() if p]
    try:
        await mesh.start()
        cp = next(p for p in mesh.procs if p.role == "controlplane")
        bound = {"http": o.http_port, "xds": o.xds_tls_port, "ca": o.ca_port, "dns": o.dns_port}
        assert all(bound.values()), bound
        assert not {n for n, p in before.items() if p and bound[n] == p}, (before, bound)
        with NO_PROXY.open(f"{mesh.api_url}/ready", timeout=10) as r:  # the control plane itself answers there
            assert r.headers.get(PID_HEADER) == str(cp.proc.pid)
        for port in (o.xds_tls_port, o.ca_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert f"--xds-tls-port {o.xds_tls_port} " in " ".join(cp.argv)  # a restart binds the same ports again
        assert f"{o.cp_host}:{o.xds_tls_port}" == mesh.xds_address
    finally:
        await mesh.stop(grace=10)
        for s in squatters:
            s.close()


@pytest.mark.parametrize("flag", ["http_port", "xds_tls_port", "ca_port"])
async def test_a_taken_port_the_user_named_fails_the_start_naming_it(tmp_path: pathlib.Path, flag: str) -> None:
    """A port given explicitly is honoured, never replaced: taken, the start fails naming it and its option."""
    squatter = _squat(0)
    port = squatter.getsockname()[1]
    ports = {"http_port": 0, "xds_tls_port": 0, "ca_port": 0, flag: port}
    mesh = LocalMesh(_options(tmp_path, **ports), settings_mod.load(), say=lambda _s: None)
    try:
        with pytest.raises(PlatformError, match=rf"127\.0\.0\.1:{port} .*--{flag.replace('_', '-')}"):
            await mesh.start()
        assert not mesh.procs  # refused before anything started
    finally:
        with contextlib.suppress(PlatformError):
            await mesh.stop(grace=5)
        squatter.close()


APPS = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: activated, labels: {app: activated}}
spec:
  command: ["python", "-m", "sailmesh.samples.bookinfo.details"]
  socketActivation: true
  ports: [{name: http, containerPort: 9080}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: plain, labels: {app: plain}}
spec:
  command: ["python", "-m", "sailmesh.samples.bookinfo.details"]
  ports: [{name: http, containerPort: 9080}]
"""


def _health(ip: str, port: int) -> int:
    try:
        with NO_PROXY.open(f"http://{ip}:{port}/health", timeout=5) as r:
            return int(r.status)
    except OSError:
        return 0


async def test_app_ports_are_held_from_the_pick_until_the_app_has_them(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An app's port is picked when the mesh is planned and bound when the app starts. Another program that binds
    a picked port in between (as it would after its own pick) must not get it: the supervisor holds the port
    (platform/listenfds.py), so that bind fails and both apps start. A `socketActivation` app is handed the
    supervisor's listening socket (LISTEN_FDS; the sample adopts it and says so), also when restarted after a
    crash; the other binds PORT itself. (Before: the pick released the port at once, the other program's bind
    succeeded and the app could not listen: the start failed.)"""
    from sailmesh.platform import portplan

    opts = _options(tmp_path)
    (tmp_path / "cfg" / "apps.yaml").write_text(APPS)
    bound: list[socket.socket] = []
    refused: list[int] = []
    real_plan = portplan.plan

    def racing_plan(resources, base_ip, pick_port):  # type: ignore[no-untyped-def]
        def pick(host: str) -> int:
            port = pick_port(host)
            s = socket.socket()
            try:
                s.bind((host, port))
                s.listen(1)
                bound.append(s)
            except OSError:
                s.close()
                refused.append(port)
            return port
        return real_plan(resources, base_ip, pick)

    monkeypatch.setattr(portplan, "plan", racing_plan)
    said: list[str] = []
    mesh = LocalMesh(opts, settings_mod.load(), say=said.append)
    try:
        await mesh.start()
        assert not bound and len(refused) == 2
        apps = {p.instance.workload: p for p in mesh.procs if p.role == "app" and p.instance is not None}
        for name, p in apps.items():
            assert p.instance is not None
            (port,) = p.instance.app_ports.values()
            assert _health(p.instance.ip, port) == 200, name
        activated = apps["activated"]
        assert "(socket passed by the supervisor)" in pathlib.Path(activated.log).read_text()
        assert "(socket passed by the supervisor)" not in pathlib.Path(apps["plain"].log).read_text()
        os.killpg(activated.proc.pid, signal.SIGKILL)
        assert activated.instance is not None
        ip, (port,) = activated.instance.ip, activated.instance.app_ports.values()

        def restarted() -> bool:
            return any(p.role == "app" and p.instance is activated.instance and p is not activated
                       and p.proc.returncode is None for p in mesh.procs) and _health(ip, port) == 200
        await asyncio.to_thread(wait_for, restarted, timeout=60, interval=0.2, what="the app restarted")
        assert pathlib.Path(activated.log).read_text().count("(socket passed by the supervisor)") == 2
        # crashed again, and another program listens on its port before the restart (1 s, then 2 s of back-off):
        # the supervisor cannot bind it, says so and leaves the app down
        again = next(p for p in mesh.procs if p.role == "app" and p.instance is activated.instance)
        os.killpg(again.proc.pid, signal.SIGKILL)
        await again.proc.wait()
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((ip, port))
        squatter.listen(1)
        bound.append(squatter)
        await asyncio.to_thread(wait_for, lambda: any("cannot restart app activated-0" in m for m in said),
                                timeout=30, interval=0.2, what="the failed restart reported")
    finally:
        await mesh.stop(grace=10)
        for s in bound:
            s.close()
