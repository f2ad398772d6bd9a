"""The control plane's proxy defaults (`/api/v1/proxy-defaults`, what the embedded platform starts each proxy with)
come from the snapshot the pushes are made from, not from the store: data flows one way (config -> snapshot -> what
proxies get), so a proxy starts with the ProxyConfig its xDS reflects. Istio's EffectiveProxyConfig precedence
(pilot/pkg/model/proxy_config.go: workload selector > namespace > root namespace > meshConfig.defaultConfig) is
applied to that answer by the platform (api/proxyconfig.py)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sailmesh.api.parse import resource_from_dict
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.platform.proxyconfig import ProxyDefaults, fetch
from sailmesh.processes import free_port
from sailmesh.settings import Settings
from sailmesh.testing.waiting import await_for


def _mesh_config(concurrency: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": f"defaultConfig:\n  concurrency: {concurrency}\n"}}


def _proxy_config(name: str, concurrency: int, selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"concurrency": concurrency}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "ProxyConfig",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


@pytest.fixture
async def plane(tmp_path: pathlib.Path) -> AsyncIterator[ControlPlane]:
    """A running control plane whose first snapshot holds the mesh default 3 and a namespace ProxyConfig of 1."""
    cp = ControlPlane(ControlPlaneOptions(xds_tls_port=0, ca_port=0, http_port=free_port(),
                                          state_dir=str(tmp_path / "state")), Settings())
    cp.memory.apply([resource_from_dict(_mesh_config(3)), resource_from_dict(_proxy_config("default-ns", 1))])
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


async def _fetch(cp: ControlPlane) -> ProxyDefaults:
    """The platform's own call (platform/proxyconfig.fetch) against the control plane's HTTP API."""
    assert cp.identity is not None
    return await fetch(f"http://127.0.0.1:{cp.opts.http_port}", str(cp.identity.api_token_path))


async def test_proxy_defaults_are_the_snapshots_not_the_stores(plane: ControlPlane) -> None:
    """A workload ProxyConfig and a new mesh config applied to the store are not in the answer until a snapshot
    holds them (on the old code, which read the store, they were at once: a proxy started then got a worker count
    its xDS did not reflect yet); once pushed, Istio's precedence picks the workload's (4) for web, the namespace's
    (1) for another workload, the new mesh default (5) where no ProxyConfig applies."""
    before = await _fetch(plane)
    assert before.concurrency("default", {"app": "web"}) == 1
    assert before.concurrency("istio-system", {}) == 3
    assert plane.snapshot is not None
    version = plane.snapshot.version
    plane.memory.apply([resource_from_dict(_mesh_config(5)),
                        resource_from_dict(_proxy_config("web", 4, {"app": "web"}))])
    # no await between the apply and this read: the debouncer cannot have built a snapshot yet
    assert plane.snapshot.version == version
    stale = plane.proxy_defaults()
    assert [d["metadata"]["name"] for d in stale["proxyConfigs"]] == ["default-ns"]
    assert stale["meshConcurrency"] == 3

    async def pushed() -> ProxyDefaults:
        assert plane.snapshot is not None and plane.snapshot.version > version
        return await _fetch(plane)

    after = await await_for(pushed, timeout=20, what="a snapshot with the new ProxyConfig")
    assert after.concurrency("default", {"app": "web"}) == 4
    assert after.concurrency("default", {"app": "client"}) == 1
    assert after.concurrency("istio-system", {}) == 5
    assert after.root_namespace == "istio-system"
