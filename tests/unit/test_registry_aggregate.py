"""The aggregate registry: several workload sources as the one WorkloadSource snapshot.build reads."""

from __future__ import annotations

import asyncio
import dataclasses

from sailmesh.api.change import Change
from sailmesh.registry.aggregate import AggregateRegistry
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry, workload_key
from sailmesh.snapshot.build import build
from tests.unit.test_snapshot_build import REVIEWS, bookinfo


def kube_source() -> LocalRegistry:
    """A second source (a Kubernetes registry's stand-in): anything with revision, workloads() and watch()."""
    return LocalRegistry()


def reviews(name: str, address: str, origin: str = "") -> Workload:
    return Workload(name, "default", address, {"app": "reviews", "version": "v1"}, origin=origin)


async def test_one_source_is_passed_through() -> None:
    local = LocalRegistry()
    agg = AggregateRegistry(local)
    watch = agg.watch()
    assert agg.register(reviews("reviews-v1-0", "127.0.1.4"))
    assert agg.workloads() is local.workloads() and agg.revision == local.revision == 1
    change = await asyncio.wait_for(anext(watch), 5)
    assert change.keys == {workload_key("reviews-v1-0", "default")}
    assert agg.unregister("reviews-v1-0", "default") and local.workloads() == ()


def test_workloads_of_every_source_sorted_and_reused_until_a_change() -> None:
    local, kube = LocalRegistry(), kube_source()
    agg = AggregateRegistry(local, kube)
    local.register(Workload("ratings-v1-0", "default", "127.0.1.5", {"app": "ratings"}))
    kube.register(reviews("reviews-v1-0", "10.0.0.4", origin="Pod default/reviews-v1-0"))
    kube.register(Workload("a-0", "zeta", "10.0.0.9"))
    first = agg.workloads()
    assert [(w.namespace, w.name) for w in first] == [("default", "ratings-v1-0"), ("default", "reviews-v1-0"),
                                                      ("zeta", "a-0")]
    assert agg.revision == 3 and agg.workloads() is first  # nothing changed: the same tuple
    local.register(reviews("reviews-v1-0", "127.0.1.4"))  # same name in two sources: both kept, by origin
    second = agg.workloads()
    assert second is not first and agg.revision == 4
    assert [w.address for w in second if w.name == "reviews-v1-0"] == ["127.0.1.4", "10.0.0.4"]


async def test_changes_of_every_source_come_through_one_watch() -> None:
    local, kube = LocalRegistry(), kube_source()
    agg = AggregateRegistry(local, kube)
    watch = agg.watch()
    kube.register(reviews("reviews-v1-0", "10.0.0.4"))
    change = await asyncio.wait_for(anext(watch), 5)
    assert change.keys == {workload_key("reviews-v1-0", "default")} and agg.revision == 1
    local.register(Workload("ratings-v1-0", "default", "127.0.1.5"))
    kube.register(Workload("details-v1-0", "default", "10.0.0.5"))
    keys: set = set()
    while len(keys) < 2:  # arrive together or one after the other, never lost
        keys |= (await asyncio.wait_for(anext(watch), 5)).keys
    assert keys == {workload_key("ratings-v1-0", "default"), workload_key("details-v1-0", "default")}
    # a change made while nobody waits is kept for the next read
    local.unregister("ratings-v1-0", "default")
    await asyncio.sleep(0)
    assert (await asyncio.wait_for(anext(watch), 5)).keys == {workload_key("ratings-v1-0", "default")}


async def test_closing_the_watch_ends_it() -> None:
    agg = AggregateRegistry(LocalRegistry(), kube_source())
    watch = agg.watch()
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.01)
    await watch.aclose()  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(pending, 5)
    except StopAsyncIteration:
        pass
    else:
        raise AssertionError("the watch should have ended")


async def test_a_cancelled_reader_leaves_no_task_and_loses_no_later_change() -> None:
    local, kube = LocalRegistry(), kube_source()
    agg = AggregateRegistry(local, kube)
    watch = agg.watch()
    before = len(asyncio.all_tasks())
    reader = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.01)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert len(asyncio.all_tasks()) == before
    kube.register(reviews("reviews-v1-0", "10.0.0.4"))
    assert (await asyncio.wait_for(anext(watch), 5)).keys == {workload_key("reviews-v1-0", "default")}


def test_snapshot_build_reads_the_aggregate() -> None:
    store, local = bookinfo()
    kube = kube_source()
    agg = AggregateRegistry(local, kube)
    s1 = build(None, store, agg, Change.everything())
    assert len(s1.endpoints[(REVIEWS, 9080)]) == 3
    kube.register(dataclasses.replace(reviews("reviews-v1-1", "10.0.0.4"), origin="Pod default/reviews-v1-1"))
    s2 = build(s1, store, agg, Change(frozenset({workload_key("reviews-v1-1", "default")})))
    assert sorted(e.address for e in s2.endpoints[(REVIEWS, 9080)]) == ["10.0.0.4", "127.0.1.4", "127.0.1.5",
                                                                        "127.0.1.6"]
