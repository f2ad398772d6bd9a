"""The mesh's DNS answers (service hostnames -> endpoint addresses, None for other names: forwarded), the agent's
resolver bootstrap, and the sample rate-limit service's matching and counting (envoyproxy/ratelimit's semantics)."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from sailmesh.agent.bootstrap import dns_resolver, system_resolvers
from sailmesh.controlplane.dns import addresses, answer
from sailmesh.samples.ratelimit.limits import ConfigError, Counter, find, parse
from sailmesh.samples.ratelimit.server import RateLimitService
from tests.unit.test_generate_support import bookinfo


def test_service_hostnames_resolve_to_endpoint_addresses() -> None:
    snap = bookinfo()
    found = addresses(snap, "reviews.default.svc.cluster.local.")
    assert found and all(a.startswith("127.") for a in found) and found == sorted(set(found))
    assert addresses(snap, "REVIEWS.default.svc.cluster.local") == found  # DNS names are case-insensitive
    assert addresses(snap, "example.com") is None
    r = answer(snap, dns.message.make_query("reviews.default.svc.cluster.local", "A"))
    assert r.rcode() == dns.rcode.NOERROR and sorted(a.address for a in r.answer[0]) == found
    r = answer(snap, dns.message.make_query("reviews.default.svc.cluster.local", "AAAA"))
    assert r.rcode() == dns.rcode.NOERROR and not r.answer  # known name, no IPv6: empty, not a fall-through
    assert answer(snap, dns.message.make_query("example.com", "A")) is None  # not the mesh's: forwarded


def test_agent_resolver_is_only_the_mesh_dns_on_loopback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The mesh's DNS forwards other names for loopback clients, so Envoy gets no second server to reorder it
    behind; one on another address does not forward, so the system's nameservers follow it."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 10.0.0.2\nnameserver fe80::1\nsearch example.com\n")
    assert system_resolvers(str(conf)) == ["10.0.0.2"]
    assert system_resolvers(str(tmp_path / "missing")) == []

    def servers(address: str) -> list[tuple[str, int]]:
        cfg = dns_resolver(address, ["10.0.0.2"])["typed_config"]
        return [(r["socket_address"]["address"], r["socket_address"]["port_value"]) for r in cfg["resolvers"]]

    assert servers("127.0.0.1:5353") == [("127.0.0.1", 5353)]
    assert servers("[::1]:5353") == [("::1", 5353)]
    assert servers("192.0.2.7:5353") == [("192.0.2.7", 5353), ("10.0.0.2", 53)]


CONFIG = {"domain": "productpage-ratelimit", "descriptors": [
    {"key": "PATH", "value": "/productpage", "rate_limit": {"unit": "minute", "requests_per_unit": 1}},
    {"key": "PATH", "rate_limit": {"unit": "minute", "requests_per_unit": 100}},
    {"key": "user", "descriptors": [{"key": "plan", "value": "free", "rate_limit": {"unit": "second",
                                                                                      "requests_per_unit": 2}}]},
]}


def test_descriptor_matching_as_envoyproxy_ratelimit() -> None:
    domain, nodes = parse(CONFIG)
    assert domain == "productpage-ratelimit"
    assert find(nodes, [("PATH", "/productpage")]).limit.requests_per_unit == 1  # type: ignore[union-attr]
    assert find(nodes, [("PATH", "/other")]).limit.requests_per_unit == 100  # type: ignore[union-attr]
    assert find(nodes, [("user", "a"), ("plan", "free")]).limit.unit == "second"  # type: ignore[union-attr]
    assert find(nodes, [("user", "a")]) is None  # no limit at that level
    assert find(nodes, [("other", "x")]) is None
    with pytest.raises(ConfigError, match="unit"):
        parse({"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "week", "requests_per_unit": 1}}]})


async def test_service_counts_fixed_windows_per_value() -> None:
    now = [1000.0]
    svc = RateLimitService(*parse(CONFIG), counter=Counter(lambda: now[0]))

    async def ask(path: str) -> int:
        req = rls_pb2.RateLimitRequest(domain="productpage-ratelimit")
        req.descriptors.add().entries.add(key="PATH", value=path)
        return int((await svc.ShouldRateLimit(req, None)).overall_code)  # type: ignore[arg-type]

    ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
    assert [await ask("/productpage") for _ in range(2)] == [ok, over]
    assert await ask("/static") == ok
    now[0] += 60  # the next minute's window
    assert await ask("/productpage") == ok
