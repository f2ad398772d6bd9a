"""The pieces wired as the control plane will: file store + local registry -> debouncer -> build -> classify."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

from sailmesh.controlplane.debounce import Debouncer
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.settings import Debounce
from sailmesh.snapshot.build import ChangeKind, Changes, build, classify
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.store.files import FileStore
from sailmesh.testing.waiting import await_for

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
    snaps: list[tuple[MeshSnapshot, ChangeKind]] = [(build(None, store, reg, Changes.everything()), ChangeKind.FULL)]

    async def push(changes: Changes) -> None:
        prev = snaps[-1][0]
        cur = build(prev, store, reg, changes)
        snaps.append((cur, classify(changes, prev, cur)))

    deb: Debouncer[Changes] = Debouncer(push, Changes.merge, Debounce(after_s=0.05, max_s=1.0))
    deb.start()

    async def pump(source: object) -> None:
        async for event in source:  # type: ignore[attr-defined]
            deb.submit(Changes.of(event))

    tasks = [asyncio.create_task(pump(store.watch())), asyncio.create_task(pump(reg.watch()))]
    try:
        reg.register(Workload("reviews-v1-0", "default", "127.0.5.1", {"app": "reviews"}))
        await await_for(lambda: _ok(len(snaps[-1][0].endpoints.get((HOST, 9080), ())) == 1), what="endpoint pushed")
        assert snaps[-1][1] is ChangeKind.ENDPOINTS

        (tmp_path / "vs.yaml").write_text(VS)
        await await_for(lambda: _ok(len(snaps[-1][0].of_kind("VirtualService")) == 1), what="VirtualService pushed")
        assert snaps[-1][1] is ChangeKind.FULL
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
