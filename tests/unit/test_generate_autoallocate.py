"""Istio's DNS auto-allocation (ISTIO_META_DNS_AUTO_ALLOCATE with DNS capture): ServiceEntry hosts without
addresses get 240.240.x.y VIPs (autoAllocateIPs), in the proxy's name table and, for a captured sidecar, as the
VIP listeners of their TCP ports."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from sailmesh.agent.bootstrap import node
from sailmesh.agent.config import AgentConfig
from sailmesh.generate.autoallocate import allocate, fnv1a32, ipv6_form
from sailmesh.generate.nametable import build_name_table
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service, ServicePort
from sailmesh.xds.types import LISTENER, ROUTE
from tests.unit.test_generate_support import generated, make_snapshot, sidecar

AUTO = {"DNS_CAPTURE": "true", "DNS_AUTO_ALLOCATE": "true"}


def _se(host: str, *addresses: str, resolution: str = "DNS", port: int = 5432) -> Service:
    return Service(hostname=host, name=host, namespace="default", ports=(ServicePort(port, "tcp", "TCP"),),
                   resolution=resolution, mesh_external=True, addresses=addresses,  # type: ignore[arg-type]
                   origin="ServiceEntry default/se")


def _snapshot() -> MeshSnapshot:
    return make_snapshot(services=[_se("db.example.com"), _se("cache.example.com"),
                                   _se("fixed.example.com", "10.5.0.1"), _se("*.wild.example.com"),
                                   _se("none.example.com", resolution="NONE")])


def _proxy(**metadata: str) -> ProxyView:
    return dataclasses.replace(sidecar(ip="10.77.0.1"), metadata=MappingProxyType(metadata))


def test_fnv_and_the_slot_numbering_follow_istio() -> None:
    """Go's hash/fnv New32a (its published test vectors), and autoAllocateIPs' numbering: slot k is x = k + 1,
    bumped past multiples of 255 (240.240.(x/255).(x%255), never .0); a collision takes the double hash."""
    assert fnv1a32(b"") == 0x811C9DC5 and fnv1a32(b"a") == 0xE40C292C and fnv1a32(b"foobar") == 0xBF9CF968
    key = "default/db.example.com"
    x = fnv1a32(key.encode()) % (255 * 255) + 1
    x += 1 if x % 255 == 0 else 0
    assert allocate((key,)) == {key: f"240.240.{x // 255}.{x % 255}"}
    addresses = allocate(tuple(f"ns/h{i}.example.com" for i in range(3000)))
    assert len(set(addresses.values())) == 3000  # collisions resolved: every key its own address
    assert all(a.startswith("240.240.") and not a.endswith((".0", ".255")) for a in addresses.values())


def test_name_table_answers_auto_allocated_addresses_only_for_proxies_that_ask() -> None:
    """Istio's GetAddressForProxy: the auto-allocated address when the proxy declares DNS capture and
    auto-allocation; not for wildcard hosts, resolution NONE, or entries with addresses."""
    snap = _snapshot()
    table = build_name_table(snap, _proxy(**AUTO)).table
    assert table["db.example.com"].ips[0].startswith("240.240.") and table["cache.example.com"].ips[0] != \
        table["db.example.com"].ips[0]
    assert list(table["fixed.example.com"].ips) == ["10.5.0.1"]
    assert "none.example.com" not in table and "*.wild.example.com" not in table
    assert "db.example.com" not in build_name_table(snap, _proxy(DNS_CAPTURE="true")).table
    assert "db.example.com" not in build_name_table(snap, _proxy()).table


def test_captured_sidecar_gets_a_vip_listener_per_auto_allocated_tcp_entry() -> None:
    """Two TCP ServiceEntries on one port without addresses: with auto-allocation each has its own VIP listener
    (Istio's reason for it); without, one 0.0.0.0_5432 listener (the first by name) serves both."""
    snap = _snapshot()
    table = build_name_table(snap, _proxy(**AUTO)).table
    lis = generated(snap, _proxy(INTERCEPTION_MODE="REDIRECT", **AUTO), LISTENER, listener_pb2.Listener)
    for host in ("db.example.com", "cache.example.com"):
        assert f"{table[host].ips[0]}_5432" in lis
    plain = generated(snap, _proxy(INTERCEPTION_MODE="REDIRECT"), LISTENER, listener_pb2.Listener)
    assert "0.0.0.0_5432" in plain and not any(n.startswith("240.240.") for n in plain)


def test_the_agent_declares_auto_allocation_when_given() -> None:
    cfg = AgentConfig(ip="127.0.0.1", name="p", dns_capture=True, dns_auto_allocate=True)
    assert node(cfg)["metadata"]["DNS_AUTO_ALLOCATE"] == "true"
    assert "DNS_AUTO_ALLOCATE" not in node(AgentConfig(ip="127.0.0.1", name="p"))["metadata"]


def test_http_route_domains_name_the_auto_allocated_address() -> None:
    """Istio's generateVirtualHostDomains uses GetAddressForProxy: for a proxy with DNS capture and
    auto-allocation an HTTP ServiceEntry host's virtual host also matches its 240.240.x.y VIP (a request whose Host
    header is the VIP, as an app that resolved the name through the agent sends it, is routed); other proxies'
    domains are unchanged."""
    web = dataclasses.replace(_se("web.example.com", port=8080), ports=(ServicePort(8080, "http", "HTTP"),))
    snap = make_snapshot(services=[web, _se("db.example.com")])
    vip = build_name_table(snap, _proxy(**AUTO)).table["web.example.com"].ips[0]
    auto = generated(snap, _proxy(**AUTO), ROUTE, route_pb2.RouteConfiguration)["8080"]
    [vhost] = [v for v in auto.virtual_hosts if v.name == "web.example.com:8080"]
    assert {vip, f"{vip}:8080"} <= set(vhost.domains)
    plain = generated(snap, _proxy(), ROUTE, route_pb2.RouteConfiguration)["8080"]
    assert not any(d.startswith("240.240.") for v in plain.virtual_hosts for d in v.domains)


def test_ipv6_only_proxies_get_istios_ipv6_form() -> None:
    """Istio's setAutoAllocatedIPs: 240.240.a.b has the twin `2001:2::f0f0:%x` (a = 0) or `2001:2::f0f0:%x%x`;
    GetAddressForProxy gives an IPv6-only proxy that one (its name table answers it)."""
    assert ipv6_form("240.240.0.1") == "2001:2::f0f0:1" and ipv6_form("240.240.0.251") == "2001:2::f0f0:fb"
    assert ipv6_form("240.240.3.10") == "2001:2::f0f0:3a"
    snap = _snapshot()
    v4 = build_name_table(snap, _proxy(**AUTO)).table["db.example.com"].ips[0]
    v6_proxy = dataclasses.replace(_proxy(**AUTO), ip="fd00::77:1")
    assert list(build_name_table(snap, v6_proxy).table["db.example.com"].ips) == [ipv6_form(v4)]
