"""Bookinfo apps as real processes: the launcher the other Bookinfo e2e tests use, and the server basics it checks
(one access-log line per request on stderr, TCP_NODELAY on accepted sockets, clean exit on SIGTERM)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from sailmesh.processes import free_port
from sailmesh.samples.bookinfo import details
from sailmesh.samples.bookinfo.common import make_listen_socket
from sailmesh.testing.waiting import await_for, wait_for
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

PROXY_VARS = frozenset(
    ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")
)


@dataclass
class App:
    """One Bookinfo service running as `python -m sailmesh.samples.bookinfo.<module>`."""

    module: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def app_env(**extra: str) -> dict[str, str]:
    """The test's environment without any proxy settings (direct calls), plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def start_app(module: str, log_dir: pathlib.Path, **env: str) -> App:
    """Spawn one service on a free loopback port; stderr goes to a file in log_dir."""
    port = int(env.pop("PORT", 0)) or free_port()
    log_path = log_dir / f"{module}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"sailmesh.samples.bookinfo.{module}"],
            cwd=ROOT,
            env=app_env(HOST="127.0.0.1", PORT=str(port), **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return App(module, proc, port, log_path)


def stop_app(app: App) -> int:
    """SIGTERM, then SIGKILL if it does not exit within 5 s; returns the exit code."""
    if app.proc.poll() is None:
        app.proc.terminate()
        try:
            app.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            app.proc.kill()
            app.proc.wait()
    return app.proc.returncode


def stop_all(apps: list[App]) -> None:
    """SIGTERM every app first, then wait for each (so shutdowns overlap)."""
    for app in apps:
        if app.proc.poll() is None:
            app.proc.terminate()
    for app in apps:
        stop_app(app)


async def wait_healthy(apps: list[App], timeout: float = 20.0) -> None:
    """Poll every app's /health until it answers 200 (fail fast if a process exits)."""
    async with aiohttp.ClientSession() as client:
        for app in apps:

            async def healthy(app: App = app) -> bool:
                if app.proc.poll() is not None:
                    raise AssertionError(f"{app.module} exited with {app.proc.returncode}:\n{app.log()}")
                try:
                    async with client.get(app.url + "/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            try:
                await await_for(healthy, timeout=timeout, what=f"{app.module} /health")
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- {app.module} log ---\n{app.log()}") from e


def wait_healthy_sync(apps: list[App], timeout: float = 20.0) -> None:
    """Blocking form of wait_healthy, for module-scoped (sync) fixtures."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for app in apps:

        def healthy(app: App = app) -> bool:
            if app.proc.poll() is not None:
                raise AssertionError(f"{app.module} exited with {app.proc.returncode}:\n{app.log()}")
            try:
                with opener.open(app.url + "/health", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        try:
            wait_for(healthy, timeout=timeout, what=f"{app.module} /health")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {app.module} log ---\n{app.log()}") from e


@contextmanager
def running_sync(log_dir: pathlib.Path, *specs: tuple[str, dict[str, str]]) -> Iterator[list[App]]:
    """Blocking form of running."""
    apps: list[App] = []
    try:
        for module, env in specs:
            apps.append(start_app(module, log_dir, **env))
        wait_healthy_sync(apps)
        yield apps
    finally:
        stop_all(apps)


@asynccontextmanager
async def running(log_dir: pathlib.Path, *specs: tuple[str, dict[str, str]]) -> AsyncIterator[list[App]]:
    """Start the given (module, env) services, wait until healthy, always stop them."""
    apps: list[App] = []
    try:
        for module, env in specs:
            apps.append(start_app(module, log_dir, **env))
        await wait_healthy(apps)
        yield apps
    finally:
        stop_all(apps)


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening (connections are refused)."""
    yield free_port()


def backend_env(details: str, reviews: str, ratings: str) -> dict[str, str]:
    """productpage env pointing at backends given as host:port."""
    env: dict[str, str] = {}
    for name, addr in (("DETAILS", details), ("REVIEWS", reviews), ("RATINGS", ratings)):
        host, _, port = addr.rpartition(":")
        env[f"{name}_HOSTNAME"] = host
        env[f"{name}_SERVICE_PORT"] = port
    return env


def hostport(app: App) -> str:
    return f"127.0.0.1:{app.port}"


# ---------------------------------------------------------------- tests of the harness and server basics


async def test_one_log_line_per_request_and_clean_sigterm(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path, ("details", {})) as (app,):
        before = app.log().count('"GET /details/')
        async with aiohttp.ClientSession() as client:
            for i in range(5):
                async with client.get(f"{app.url}/details/{i}", headers={"x-request-id": f"req-{i}"}) as resp:
                    assert resp.status == 200

        async def logged() -> bool:
            return app.log().count('"GET /details/') == before + 5

        await await_for(logged, what="5 access-log lines")
        lines = [line for line in app.log().splitlines() if '"GET /details/' in line]
        assert all(f'"req-{i}"' in lines[i] for i in range(5)), lines
        started = time.monotonic()
        assert stop_app(app) == 0
        assert time.monotonic() - started < 3
        assert "shutting down" in app.log()


async def test_listening_socket_sets_tcp_nodelay() -> None:
    """Accepted connections have TCP_NODELAY (else each response can wait 40 ms for a delayed ACK)."""

    async def nodelay(request: web.Request) -> web.Response:
        sock: socket.socket = request.transport.get_extra_info("socket")  # type: ignore[union-attr]
        return web.json_response({"nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)})

    app = details.make_app()
    app.router.add_get("/_nodelay", nodelay)
    sock = make_listen_socket("127.0.0.1", 0)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        port = sock.getsockname()[1]
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/_nodelay") as resp:
            assert (await resp.json())["nodelay"] != 0
    finally:
        await runner.cleanup()


async def test_bad_port_env_exits_with_error() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "sailmesh.samples.bookinfo.ratings"],
        cwd=ROOT,
        env=app_env(PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1
    assert "PORT='not-a-port' is not a port number" in bad.stderr
