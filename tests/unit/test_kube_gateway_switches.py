"""Istio's Gateway API switches (pilot/pkg/features, environment variables of the control plane, each true by
default): PILOT_ENABLE_GATEWAY_API (off: the Gateway API's CRDs are not watched and its objects convert to
nothing), PILOT_ENABLE_GATEWAY_API_STATUS (off: no status writer), PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER
(off: no gateway per Gateway) and PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER (off: no default GatewayClass).
Booleans are read as Istio's env.Register reads them (Go's strconv.ParseBool; anything else keeps the default)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sailmesh.api.parse import parse_text
from sailmesh.platform.kube.client import KubeConnection
from sailmesh.platform.kube.gatewaydeploy import GatewayDeployer
from sailmesh.platform.kube.platform import KubePlatform, istio_kinds
from sailmesh.platform.kube.store import KubeStore
from sailmesh.settings import GatewayApiSwitches, Settings, istio_bool
from sailmesh.store.memory import MemoryStore
from sailmesh.webhook.inject import InjectionConfig
from tests.unit.test_gatewayapi_validate import GW, ROUTE
from tests.unit.test_kube_gateway_status import GATEWAYS, crd, gateway_obj

SWITCHES = ("PILOT_ENABLE_GATEWAY_API", "PILOT_ENABLE_GATEWAY_API_STATUS",
            "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER", "PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER")


@pytest.mark.parametrize("raw,expected", [("", True), ("false", False), ("0", False), ("F", False),
                                          ("FALSE", False), ("true", True), ("1", True), ("no", True),
                                          ("off", True)])
def test_booleans_are_read_as_istio_reads_them(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("PILOT_ENABLE_GATEWAY_API", raw)
    assert istio_bool("PILOT_ENABLE_GATEWAY_API", True) is expected  # "no"/"off": unreadable, the default stays


def test_switches_default_on_and_follow_istios_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    assert Settings().gateway_api == GatewayApiSwitches(True, True, True, True)
    monkeypatch.setenv("PILOT_ENABLE_GATEWAY_API_STATUS", "false")
    monkeypatch.setenv("PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER", "0")
    assert Settings().gateway_api == GatewayApiSwitches(True, False, False, True)
    monkeypatch.setenv("PILOT_ENABLE_GATEWAY_API", "false")
    assert not Settings().gateway_api.enabled


def test_without_the_gateway_api_its_crds_are_not_watched_and_its_objects_convert_to_nothing() -> None:
    gateway_crd = crd("gateway.networking.k8s.io", "Gateway", "gateways", [("v1", True)])
    assert istio_kinds(gateway_crd) == GATEWAYS
    assert istio_kinds(gateway_crd, gateway_api=False) is None
    vs_crd = crd("networking.istio.io", "VirtualService", "virtualservices", [("v1", True)])
    assert istio_kinds(vs_crd, gateway_api=False) is not None  # Istio's own kinds are not affected
    from sailmesh.generate.gatewayapi.reader import GatewayApiReader

    store = MemoryStore()
    store.apply(parse_text(GW % "  - {name: http, port: 80, protocol: HTTP}" + "\n---\n" + ROUTE % (
        "backendRefs: [{name: productpage, port: 9080}]")).resources)
    assert GatewayApiReader(store, "cluster.local").list("Gateway")
    off = GatewayApiReader(store, "cluster.local", enabled=False)
    assert off.list("Gateway") == [] and off.list("VirtualService") == []


class _Elector:
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def add_task(self, name: str, _lead: Callable[[], Awaitable[None]]) -> None:
        self.tasks.append(name)


@pytest.mark.parametrize("switches,writers", [
    (GatewayApiSwitches(True, True, True, True), ["gateway-status", "gateway-deployer"]),
    (GatewayApiSwitches(True, False, True, True), ["gateway-deployer"]),
    (GatewayApiSwitches(True, True, False, False), ["gateway-status"]),
    (GatewayApiSwitches(False, True, True, True), []),
])
def test_the_lease_holder_runs_only_the_gateway_writers_switched_on(switches: GatewayApiSwitches,
                                                                   writers: list[str]) -> None:
    platform = KubePlatform("unused", gateway_api=switches)
    platform.conn = KubeConnection.__new__(KubeConnection)  # started (no requests are made here)
    elector = _Elector()
    platform.elector = elector  # type: ignore[assignment]
    platform.run_gateway_controllers(lambda _key: None, "cluster.local", InjectionConfig())
    assert elector.tasks == writers


class _Recorder:
    """A connection that records the writes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def send_json(self, method: str, path: str, body: Any, *_args: Any) -> Any:
        self.calls.append((method, path))
        return {}

    async def delete(self, path: str) -> None:
        self.calls.append(("DELETE", path))


@pytest.mark.parametrize("deploy,default_class", [(True, True), (False, True), (True, False)])
def test_the_deployment_and_gatewayclass_controllers_are_switched_apart(deploy: bool, default_class: bool) -> None:
    store = KubeStore()
    store.listed(GATEWAYS, [gateway_obj()])
    conn = _Recorder()
    deployer = GatewayDeployer(conn, store, "istio-system", InjectionConfig(),  # type: ignore[arg-type]
                               lambda: True, deploy=deploy, default_class=default_class)
    asyncio.run(deployer.reconcile())
    created_class = ("POST", "/apis/gateway.networking.k8s.io/v1/gatewayclasses") in conn.calls
    applied = [path for method, path in conn.calls if method == "PATCH"]
    assert created_class is default_class
    assert bool(applied) is deploy
    if deploy:
        assert any(path.endswith("/namespaces/web/deployments/gw-istio") for path in applied), applied
