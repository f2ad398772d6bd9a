"""The in-process driver (the control plane's share of a push, without gRPC) runs and every proxy gets each change."""

from __future__ import annotations

import asyncio

from bench.controlplane import inprocess


def test_every_proxy_gets_a_route_response_per_change() -> None:
    res = asyncio.run(inprocess.run(services=20, proxies=5, scoping=True, changes=3, profile=False))
    assert [c["responses"] for c in res["changes"]] == [5, 5, 5]
    assert res["median_build_ms"] > 0 and res["median_responses_ms"] > 0
