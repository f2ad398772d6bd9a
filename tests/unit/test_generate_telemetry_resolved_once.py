"""A proxy's Telemetry is resolved once per listener build, not per connection manager (issue 8's push cost).

The review of session 7 found the grpc_stats slot, observability() and with_metrics_log() each resolving it
again for every inbound and gateway HTTP connection manager: three resolutions per HCM in the hot path.
"""

from __future__ import annotations

import pathlib

import pytest

from sailmesh.generate.listeners import build_listeners
from sailmesh.telemetry import resolve
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_support import bookinfo, gateway_proxy, generate, sidecar


@pytest.mark.parametrize("kind", ["sidecar", "gateway"])
def test_telemetry_is_resolved_once_for_all_of_a_proxys_listeners(kind: str, monkeypatch: pytest.MonkeyPatch,
                                                                   conformance: pathlib.Path) -> None:
    snap = bookinfo(conformance / "bookinfo" / "bookinfo-gateway.yaml")
    proxy = gateway_proxy() if kind == "gateway" else sidecar(app_ports={9080: 41000, 9081: 41001, 9082: 41002})
    want = generate(snap, proxy, LISTENER)  # before counting: what the proxy gets does not change
    calls = []
    real = resolve.for_proxy

    def counting(snapshot, p):  # type: ignore[no-untyped-def]
        calls.append(p.id)
        return real(snapshot, p)

    monkeypatch.setattr(resolve, "for_proxy", counting)
    listeners = build_listeners(snap, proxy)
    assert listeners and calls == [proxy.id]  # was three per HTTP connection manager
    assert {x.name for x in listeners} == set(want)
