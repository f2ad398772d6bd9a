"""The embedded platform asks the control plane for its proxy defaults (ProxyConfigs, the mesh config's
defaultConfig.concurrency) once per batch of proxies started together, not once per proxy: `sailmesh up` with N
workloads makes one call, and a proxy started later (a Gateway API gateway) still asks afresh."""

from __future__ import annotations

import asyncio
import os
import pathlib
import types
from collections.abc import Coroutine, Sequence
from typing import Any

from sailmesh import settings as settings_mod
from sailmesh.platform import local
from sailmesh.platform.portplan import MeshOptions
from sailmesh.platform.proxyconfig import Batch, ProxyDefaults
from sailmesh.testing.waiting import random_loopback_block

WORKLOADS = "".join(f"""\
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: w{i}, namespace: default, labels: {{app: w{i}}}}}
spec:
  command: ["python", "-c", "pass"]
  ports: [{{name: http, containerPort: 8080, protocol: HTTP}}]
""" for i in range(3))


def _mesh(tmp_path: pathlib.Path, calls: list[str]) -> local.LocalMesh:
    """A LocalMesh whose processes, waits and control plane are fakes: what it asks for is what it would ask."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mesh.yaml").write_text(WORKLOADS)
    block = random_loopback_block()
    mesh = local.LocalMesh(MeshOptions(config_dirs=[str(tmp_path / "cfg")], state_dir=str(tmp_path / "state"),
                                       gateway_ip=f"{block}.1", base_ip=f"{block}.2", http_port=0),
                           settings_mod.load(), say=lambda _s: None)

    async def fetch(api_url: str, token_file: str) -> ProxyDefaults:
        calls.append(api_url)
        await asyncio.sleep(0.01)  # answered later: concurrent starts must still share one call
        return ProxyDefaults((), 3, "istio-system")

    async def spawn(name: str, role: str, argv: Sequence[str], env: dict[str, str], address: str = "",
                    cwd: str | None = None) -> local._Proc:
        fake = types.SimpleNamespace(pid=os.getpid(), returncode=None)
        p = local._Proc(name, role, fake, "log", address, argv=tuple(argv))  # type: ignore[arg-type]
        mesh.procs.append(p)
        return p

    async def nothing(*_a: Any, **_k: Any) -> None:
        return None

    async def token(*_a: Any) -> str:
        return "token-file"

    def track(task: asyncio.Task[None]) -> None:
        task.cancel()

    def watch(_p: local._Proc) -> None:
        return None

    mesh.fetch_proxy_defaults = fetch
    mesh._spawn = spawn  # type: ignore[method-assign]
    mesh._bound_ports = mesh._wait_http = mesh._wait_tcp = nothing  # type: ignore[method-assign,assignment]
    mesh._join_token_file = token  # type: ignore[method-assign]
    mesh._track, mesh._watch = track, watch  # type: ignore[method-assign]
    return mesh


async def test_up_fetches_the_proxy_defaults_once_for_all_its_proxies(tmp_path: pathlib.Path) -> None:
    """Three workloads and the ingress gateway start with one call, and each gets the answer (mesh default 3)."""
    calls: list[str] = []
    mesh = _mesh(tmp_path, calls)
    await mesh._start()  # start() would stop the fake processes (our own pid) on failure: not that
    proxies = [p for p in mesh.procs if p.role in ("agent", "gateway")]
    assert len(proxies) == 4
    assert len(calls) == 1, calls
    assert all("--concurrency 3" in " ".join(p.argv) for p in proxies), [p.argv for p in proxies]


async def test_a_proxy_started_later_asks_again(tmp_path: pathlib.Path) -> None:
    """Outside a batch (a Gateway API gateway deployed while the mesh runs) each start fetches fresh defaults."""
    calls: list[str] = []
    mesh = _mesh(tmp_path, calls)
    for name in ("gw-a", "gw-b"):
        await mesh._agent_args(kind="router", ip="127.0.0.1", name=name, namespace="default", labels={}, sa=name,
                               app_ports={})
    assert len(calls) == 2


async def test_a_batch_shares_one_answer_among_concurrent_callers() -> None:
    calls: list[int] = []

    async def get() -> ProxyDefaults:
        calls.append(1)
        await asyncio.sleep(0.01)
        return ProxyDefaults((), None, "istio-system")

    batch = Batch(get)
    waits: list[Coroutine[Any, Any, ProxyDefaults]] = [batch.defaults() for _ in range(5)]
    answers = await asyncio.gather(*waits)
    assert len(calls) == 1 and len({id(a) for a in answers}) == 1
