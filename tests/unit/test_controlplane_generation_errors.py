"""A builder that raises for one proxy costs that proxy one push, not its stream (issue 8, item 3).

Real gRPC on loopback: the ADS server serving a MeshSource, two Envoy-like clients. Before the Generator
wrapped builder failures, the exception escaped the connection's loop and gRPC ended the proxy's stream.
"""

from __future__ import annotations

import json

import pytest

from sailmesh.controlplane.source import MeshSource
from sailmesh.generate import generator as generator_mod
from sailmesh.generate.generator import Part
from sailmesh.server.ads import AdsServer
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import bookinfo


def _node(name: str, ip: str, app: str) -> tuple[str, dict[str, str]]:
    return (f"sidecar~{ip}~{name}.default~default.svc.cluster.local",
            {"LABELS": json.dumps({"app": app, "version": "v1"}), "APP_PORTS": "9080:41000"})


def _until(condition):
    async def check() -> bool:
        return bool(condition())
    return check


async def test_a_failing_builder_keeps_the_stream_and_the_last_config(monkeypatch: pytest.MonkeyPatch) -> None:
    [listeners_part] = generator_mod.TYPES[LISTENER]  # per proxy (own scope)
    broken = {"on": True}

    def build(snapshot, proxy, memos):
        if broken["on"] and proxy.labels.get("app") == "reviews":
            raise KeyError("subsets")  # what a generator bug looks like
        return listeners_part.build(snapshot, proxy, memos)

    monkeypatch.setitem(generator_mod.TYPES, LISTENER, (Part(listeners_part.name, build, listeners_part.scope),))
    source = MeshSource(bookinfo(version=1))
    server = AdsServer(source)
    port = await server.serve("127.0.0.1", 0)
    target = f"127.0.0.1:{port}"
    pp_id, pp_meta = _node("productpage-v1-0", "127.0.1.1", "productpage")
    rv_id, rv_meta = _node("reviews-v1-0", "127.0.1.3", "reviews")
    try:
        async with AdsClient(target, pp_id, metadata=pp_meta) as pp, AdsClient(target, rv_id, metadata=rv_meta) as rv:
            await await_for(_until(lambda: pp.resources(ROUTE)), what="productpage's routes")
            await await_for(_until(lambda: rv.resources(CLUSTER)), what="reviews' clusters")

            def reviews_status() -> dict | None:
                found = [c for c in server.connections() if c.node_id == rv_id]
                return {t.short: t for t in found[0].types.values()} if found else None

            def failed_and_clusters_synced() -> bool:
                st = reviews_status() or {}
                return bool(getattr(st.get("lds"), "error", "")) and getattr(st.get("cds"), "state", "") == "SYNCED"

            # the clusters' ACK may arrive after the listeners fail (endpoints follow clusters without waiting)
            await await_for(_until(failed_and_clusters_synced), what="the error in the status, clusters SYNCED")
            status = reviews_status()
            assert status is not None
            assert "KeyError" in status["lds"].error and rv_id in status["lds"].error
            assert status["lds"].state == "STALE" and status["cds"].state == "SYNCED"
            assert not rv.resources(LISTENER) and not rv.done and rv.error is None  # the stream lives on
            # Istio counts it: pilot_total_xds_internal_errors.
            assert server.metrics.internal_errors.value() >= 1
            assert "pilot_total_xds_internal_errors" in server.metrics.registry.render()

            # The bug is fixed (here: the builder works again): the next push reaches the proxy.
            broken["on"] = False
            request = PushRequest(version="2", type_urls=frozenset({LISTENER}))
            source.update(bookinfo(version=2), request)
            server.push(request)
            await await_for(_until(lambda: rv.resources(ROUTE)), what="reviews' listeners and routes after the fix")
            status = reviews_status()
            assert status is not None and status["lds"].error == ""
            assert server.metrics.push_time.count(type="lds") >= 1  # pilot_xds_push_time, per pushed type
            assert pp.error is None and not pp.done
    finally:
        await server.stop(0)
