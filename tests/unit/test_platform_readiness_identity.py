"""The platform's readiness wait accepts only an answer from its own child (X-Sailmesh-Pid), never from another
process that happens to answer on the port (issue 13: a second mesh reported "ready" from the first one's ports)."""

from __future__ import annotations

import asyncio
import pathlib
import sys

import pytest
from aiohttp import web

from sailmesh import settings as settings_mod
from sailmesh.errors import PlatformError
from sailmesh.platform.local import LocalMesh
from sailmesh.platform.portplan import MeshOptions
from sailmesh.processes import PID_HEADER, free_port


async def _serve(pid_header: str | None) -> tuple[web.AppRunner, int]:
    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready\n", headers={PID_HEADER: pid_header} if pid_header else {})

    app = web.Application()
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.mark.parametrize("answer", ["another pid", "no header", "own pid"])
async def test_readiness_must_come_from_the_child_itself(tmp_path: pathlib.Path, answer: str) -> None:
    mesh = LocalMesh(MeshOptions(config_dirs=[], state_dir=str(tmp_path), ready_timeout=5),
                     settings_mod.load(), say=lambda _s: None)
    child = await mesh._spawn("controlplane", "controlplane",
                              [sys.executable, "-c", "import time; time.sleep(60)"], {})
    header = {"another pid": "1", "no header": None, "own pid": str(child.proc.pid)}[answer]
    runner, port = await _serve(header)
    try:
        if answer == "own pid":
            await mesh._wait_http(f"http://127.0.0.1:{port}/ready", "control plane", child)
        else:
            with pytest.raises(PlatformError, match="answered by another process"):
                await mesh._wait_http(f"http://127.0.0.1:{port}/ready", "control plane", child)
    finally:
        await runner.cleanup()
        await mesh.stop(grace=5)
        await asyncio.sleep(0)
