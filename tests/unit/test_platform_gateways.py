"""The embedded platform's gateway deployments (platform/gateways.py): one gateway per Gateway, on its own
loopback address, stopped when the Gateway goes."""

from __future__ import annotations

import asyncio
from typing import Any

from sailmesh.platform.gateways import GatewayDeployments, gateway_labels, next_address


class FakeSupervisor:
    api_url = "http://127.0.0.1:1"
    api_token_file = "/nonexistent"

    def __init__(self) -> None:
        self.said: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)


def test_one_gateway_per_gateway_on_its_own_address() -> None:
    started: list[tuple[str, str, dict[str, str], str]] = []
    retired: list[Any] = []

    async def spawn(ns: str, name: str, labels: dict[str, str], ip: str) -> str:
        started.append((ns, name, labels, ip))
        return f"proc-{name}"

    sup = FakeSupervisor()
    deps = GatewayDeployments(sup, spawn, retired.append, "127.0.0.1", lambda: {"127.0.0.2"}, ())
    asyncio.run(deps.reconcile({("default", "a"), ("default", "b")}))
    assert [(ns, n, ip) for ns, n, _, ip in started] == [("default", "a", "127.0.0.3"), ("default", "b", "127.0.0.4")]
    assert started[0][2] == gateway_labels("a") and started[0][2]["gateway.networking.k8s.io/gateway-name"] == "a"
    asyncio.run(deps.reconcile({("default", "b")}))
    assert retired == ["proc-a"] and set(deps.running) == {("default", "b")}
    assert any("default/a-istio" in line for line in sup.said)


def test_next_address_skips_taken_ones() -> None:
    assert next_address("127.0.0.1", {"127.0.0.2", "127.0.0.3"}, ()) == "127.0.0.4"
