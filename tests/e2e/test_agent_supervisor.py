"""EnvoySupervisor with real processes: the bootstrap validates in Envoy, restart backoff gives up, stop is clean."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from sailmesh.agent.admin import EnvoyAdmin
from sailmesh.agent.config import AgentConfig
from sailmesh.agent.envoy import EnvoyOptions, EnvoySupervisor
from sailmesh.agent.main import write_bootstrap
from sailmesh.processes import envoy_binary
from sailmesh.testing.waiting import await_for, random_loopback_block

pytestmark = pytest.mark.e2e


def _cfg(**kw: object) -> AgentConfig:
    ip = f"{random_loopback_block()}.{random.randint(2, 250)}"
    return AgentConfig(ip=ip, name="gw-0", labels={"app": "gw"}, app_ports=((9080, 41234),), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [{}, {"proxy_type": "router"}, {"delta": True}, {"xds_host": "localhost"}],
    ids=["sidecar", "router", "delta", "dns"],
)
def test_bootstrap_is_accepted_by_envoy(tmp_path: Path, kw: dict[str, object]) -> None:
    path = write_bootstrap(_cfg(**kw), tmp_path)
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


async def test_supervisor_gives_up_on_a_process_that_keeps_dying(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false
    sup = EnvoySupervisor(
        EnvoyOptions(
            bootstrap_path=tmp_path / "none.json",
            binary=false,
            pid_path=tmp_path / "envoy.pid",
            backoff_initial_s=0.01,
            max_quick_failures=3,
        ),
        EnvoyAdmin("http://127.0.0.1:1"),
    )
    await sup.start()
    try:
        await asyncio.wait_for(sup.gave_up.wait(), 5)
        assert sup.restarts == 3
        assert sup.error is not None and "keeps exiting" in str(sup.error)
    finally:
        await sup.stop()


async def test_stop_terminates_envoy_and_removes_pid_file(tmp_path: Path) -> None:
    cfg = _cfg()
    admin = EnvoyAdmin(cfg.admin_url)
    sup = EnvoySupervisor(
        EnvoyOptions(bootstrap_path=write_bootstrap(cfg, tmp_path), pid_path=tmp_path / "envoy.pid"), admin
    )
    await sup.start()
    try:
        await await_for(admin.server_state, timeout=10, what="Envoy admin answers")
        assert int((tmp_path / "envoy.pid").read_text()) == sup.pid
        assert await sup.stop() == 0  # SIGTERM: Envoy exits cleanly
        assert sup.pid is None and not (tmp_path / "envoy.pid").exists()
        assert sup.restarts == 0
    finally:
        await sup.stop()
        await admin.close()
