"""Reliability (issue 13): config churn under steady traffic: web's VirtualService rewritten every 100 ms (20 s here;
a minute with SAILMESH_RELIABILITY_FULL=1). No request fails, every response carries one of the routes written,
and the last one written is the one in force at the end."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from tests.e2e.reliability.support import Traffic, address, report, start_mesh, virtual_service

CHURN_S = 60.0 if os.environ.get("SAILMESH_RELIABILITY_FULL") else 20.0
EVERY_S = 0.1
# the full runs last longer than the suite's 300 s per test (pyproject's pytest-timeout)
pytestmark = pytest.mark.timeout(CHURN_S + 300)


def test_a_change_every_100ms_under_traffic(tmp_path: pathlib.Path) -> None:
    mesh, vs = start_mesh(tmp_path)
    with mesh:
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        written = ["v1"]
        try:
            traffic.wait_route("v1")
            end = time.monotonic() + CHURN_S
            n = 0
            while time.monotonic() < end:
                n += 1
                written.append(f"c{n}")
                tmp = vs.with_suffix(".tmp")  # an editor's save: write aside, rename over (atomic)
                tmp.write_text(virtual_service(written[-1]))
                os.replace(tmp, vs)
                time.sleep(EVERY_S)
            traffic.wait_route(written[-1])
            traffic.wait_requests(50)
        finally:
            traffic.stop()
        report(f"config churn: {n} changes every {EVERY_S * 1000:.0f} ms over {CHURN_S:.0f} s", traffic)
        assert traffic.failures == [] and traffic.refused == [], traffic.summary()
        assert set(traffic.routes) <= set(written)
        assert traffic.last_route == written[-1]
