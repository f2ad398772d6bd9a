"""The pieces wired as the control plane wires them: file + registry -> debouncer -> build -> push_request."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

from sailmesh.api.change import Change
from sailmesh.controlplane.debounce import Debouncer
from sailmesh.generate.affect import EVERY_TYPE, affected_types
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.settings import Debounce
from sailmesh.snapshot.build import build
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.store.files import FileStore
from sailmesh.testing.waiting import await_for
from sailmesh.xds.types import ENDPOINT, ROUTE

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
"""
HOST = "reviews.default.svc.cluster.local"


async def test_store_and_registry_events_become_snapshots(tmp_path: pathlib.Path) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE)
    store = FileStore(str(tmp_path), rescan_ms=200, debounce_ms=20)
    reg = LocalRegistry()
    await store.start()
    snaps: list[tuple[MeshSnapshot, frozenset[str]]] = [(build(None, store, reg, Change.everything()), EVERY_TYPE)]

    async def push(change: Change) -> None:
        prev = snaps[-1][0]
        cur = build(prev, store, reg, change)
        snaps.append((cur, affected_types(change, prev, cur)))

    deb: Debouncer[Change] = Debouncer(push, Change.merge, Debounce(after_s=0.05, max_s=1.0))
    deb.start()

    async def pump(source: object) -> None:
        async for event in source:  # type: ignore[attr-defined]
            deb.submit(event)

    tasks = [asyncio.create_task(pump(store.watch())), asyncio.create_task(pump(reg.watch()))]
    try:
        reg.register(Workload("reviews-v1-0", "default", "127.0.5.1", {"app": "reviews"}))
        await await_for(lambda: _ok(len(snaps[-1][0].endpoints.get((HOST, 9080), ())) == 1), what="endpoint pushed")
        assert snaps[-1][1] == {ENDPOINT}

        (tmp_path / "vs.yaml").write_text(VS)
        await await_for(lambda: _ok(len(snaps[-1][0].of_kind("VirtualService")) == 1), what="VirtualService pushed")
        assert snaps[-1][1] == {ROUTE}
        assert snaps[-1][0].endpoints is snaps[-2][0].endpoints  # a route change keeps the endpoints object
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await deb.close()
        await store.close()


async def _ok(value: bool) -> bool:
    return value
