"""The DNS proxy's name table and answers, as Istio's (pkg/dns/server/name_table.go, pkg/dns/client/dns.go)."""

from __future__ import annotations

import asyncio
import dataclasses

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from sailmesh.agent.dns import DnsProxy, LookupTable, answer_from_table, lookup_table, parse_upstreams
from sailmesh.dnsio import ResolvConf, read_resolv_conf, to_wire
from sailmesh.errors import AgentError
from sailmesh.generate.nametable import build_name_table
from sailmesh.snapshot.model import Endpoint, Service, ServicePort
from sailmesh.xds.nds import NameTable
from tests.unit.test_generate_support import make_snapshot, service, sidecar, workload

SEARCH = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")


def _se(host: str, *addresses: str, resolution: str = "STATIC") -> Service:
    return Service(hostname=host, name=host, namespace="default", ports=(ServicePort(443, "tls", "TLS"),),
                   resolution=resolution, mesh_external=True, addresses=addresses,  # type: ignore[arg-type]
                   origin="ServiceEntry default/se")


def _snapshot():  # type: ignore[no-untyped-def]
    services = [
        service("reviews", addresses=("10.96.0.10",), origin="Service default/reviews"),
        service("ratings", ns="other", addresses=("10.96.0.11", "fd00::11"), origin="Service other/ratings"),
        service("hidden", ns="other", addresses=("10.96.0.12",), export_to=(".",), origin="Service other/hidden"),
        # a headless Service: Passthrough, so its endpoints' addresses (Istio's rule)
        service("db", resolution="NONE", origin="Service default/db"),
        # no cluster IP and not headless: nothing to answer with (Istio leaves it out)
        service("noip", origin="Service default/noip"),
        _se("api.example.com", "240.0.0.1", "240.0.0.2"),
        _se("*.wild.example.com", "240.0.0.3"),
        _se("cidr.example.com", "10.1.0.0/16"),
        _se("dns.example.com", resolution="DNS"),
    ]
    workloads = [workload("db-0", "127.0.3.1", app="db"), workload("db-1", "127.0.3.2", app="db")]
    return make_snapshot(services=services, workloads=workloads)


def test_name_table_as_istio_builds_it() -> None:
    table = build_name_table(_snapshot(), sidecar())
    got = {h: (list(i.ips), i.registry, i.shortname, i.namespace) for h, i in table.table.items()}
    assert got == {
        "reviews.default.svc.cluster.local": (["10.96.0.10"], "Kubernetes", "reviews", "default"),
        "ratings.other.svc.cluster.local": (["10.96.0.11", "fd00::11"], "Kubernetes", "ratings", "other"),
        "db.default.svc.cluster.local": (["127.0.3.1", "127.0.3.2"], "Kubernetes", "db", "default"),
        "api.example.com": (["240.0.0.1", "240.0.0.2"], "External", "", ""),
        "*.wild.example.com": (["240.0.0.3"], "External", "", ""),
    }  # hidden: exportTo "." of another namespace; noip, cidr, dns.example.com: no address to answer with


def test_name_table_is_istios_message_on_the_wire() -> None:
    table = NameTable()
    info = table.table["a"]
    info.ips.append("1.2.3.4")
    info.registry = "K"
    # field 1 (table map entry: key 1, value 2), NameInfo ips = 1, registry = 2: Istio's nds.proto numbering
    assert table.SerializeToString() == b"\n\x11\n\x01a\x12\x0c\n\x071.2.3.4\x12\x01K"


def _lookup(ns: str = "default", search: tuple[str, ...] = SEARCH) -> LookupTable:
    return lookup_table(build_name_table(_snapshot(), sidecar(ns=ns)), ns, "cluster.local", search)


def _ask(table: LookupTable | None, name: str, rdtype: str = "A") -> dns.message.Message | None:
    return answer_from_table(table, dns.message.make_query(name, rdtype))


def _addresses(response: dns.message.Message | None) -> list[tuple[str, str, list[str]]]:
    assert response is not None
    return [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), sorted(x.to_text() for x in r))
            for r in response.answer]


def test_kubernetes_short_names_from_the_proxys_namespace() -> None:
    """generateAltHosts: name.ns., name.ns.svc., the FQDN, and name. in the proxy's own namespace."""
    table = _lookup()
    for name in ("reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local",
                 "REVIEWS.default.svc.cluster.local"):
        r = _ask(table, name + ".")
        assert r is not None and r.flags & dns.flags.AA and r.rcode() == dns.rcode.NOERROR
        assert _addresses(r) == [(name.lower() + ".", "A", ["10.96.0.10"])], name
    assert _ask(table, "ratings.") is None  # another namespace's short name: not ours, upstream decides
    assert _addresses(_ask(table, "ratings.other.")) == [("ratings.other.", "A", ["10.96.0.11"])]
    assert _addresses(_ask(table, "ratings.other.", "AAAA")) == [("ratings.other.", "AAAA", ["fd00::11"])]
    assert _addresses(_ask(_lookup("other"), "ratings.")) == [("ratings.", "A", ["10.96.0.11"])]
    assert _ask(table, "hidden.other.svc.cluster.local.") is None


def test_first_search_domain_answers_with_a_cname_and_the_addresses() -> None:
    """buildDNSAnswers: host + the first search domain -> CNAME to the host, plus its A records, in one answer."""
    table = _lookup()
    r = _ask(table, "api.example.com.default.svc.cluster.local.")
    assert _addresses(r) == [("api.example.com.default.svc.cluster.local.", "CNAME", ["api.example.com."]),
                             ("api.example.com.", "A", ["240.0.0.1", "240.0.0.2"])]
    assert _ask(table, "api.example.com.svc.cluster.local.") is None  # only the first search domain
    assert _addresses(_ask(_lookup(search=()), "api.example.com.")) == [("api.example.com.", "A",
                                                                          ["240.0.0.1", "240.0.0.2"])]


def test_known_name_without_that_record_is_noerror_other_types_go_upstream() -> None:
    table = _lookup()
    r = _ask(table, "api.example.com.", "AAAA")
    assert r is not None and r.rcode() == dns.rcode.NOERROR and not r.answer and r.flags & dns.flags.AA
    assert _ask(table, "api.example.com.", "MX") is None  # Istio answers only A/AAAA from its table
    assert _ask(table, "www.example.org.") is None
    assert _ask(table, "cidr.example.com.") is None and _ask(table, "noip.default.svc.cluster.local.") is None


def test_reverse_lookups_of_mesh_addresses_go_upstream_as_istios() -> None:
    """Istio's agent answers no PTR from its table (LookupTable.lookupHost: only A/AAAA, "TODO: handle PTR records
    for reverse dns lookups"; an in-addr.arpa name is not in allHosts): a reverse lookup of a mesh address, or a PTR
    question for a mesh name, goes to the upstream resolvers."""
    table = _lookup()
    assert _ask(table, "10.0.96.10.in-addr.arpa.", "PTR") is None
    assert _ask(table, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "PTR") is None
    assert _ask(table, "api.example.com.", "PTR") is None


def test_a_kubernetes_host_without_a_short_name_answers_only_its_own_name() -> None:
    """MCS hosts (clusterset.local) carry no short name: no `name.ns.` variants, and never the root name."""
    table = NameTable()
    info = table.table["a.ns.svc.cluster.local"]  # in the proxy's domain, but no short name
    info.ips.append("10.0.0.1")
    info.registry = "Kubernetes"
    lookup = lookup_table(table, "ns", "cluster.local", ())
    assert lookup.hosts == {"a.ns.svc.cluster.local."}
    assert _ask(lookup, ".") is None


def test_wildcard_hosts_answer_the_names_below_them() -> None:
    table = _lookup()
    assert _addresses(_ask(table, "a.b.wild.example.com.")) == [("a.b.wild.example.com.", "A", ["240.0.0.3"])]
    assert _ask(table, "wild.example.com.") is None


def test_headless_service_answers_its_endpoints() -> None:
    assert _addresses(_ask(_lookup(), "db.")) == [("db.", "A", ["127.0.3.1", "127.0.3.2"])]


def test_servfail_before_the_first_table_and_without_a_question() -> None:
    r = _ask(None, "reviews.")
    assert r is not None and r.rcode() == dns.rcode.SERVFAIL
    query = dns.message.make_query("x.", "A")
    query.question = []
    r = answer_from_table(_lookup(), query)
    assert r is not None and r.rcode() == dns.rcode.SERVFAIL


def test_a_udp_answer_too_big_is_truncated() -> None:
    many = [Endpoint("db.default.svc.cluster.local", 9080, f"127.0.{i // 250}.{i % 250 + 1}", 9080)
            for i in range(100)]
    snap = make_snapshot(services=[service("db", resolution="NONE", origin="Service default/db")],
                         extra_endpoints=many)
    table = lookup_table(build_name_table(snap, sidecar()), "default", "cluster.local", SEARCH)
    response = _ask(table, "db.")
    assert response is not None and len(response.answer[0]) == 100
    wire = to_wire(response, 512)
    assert len(wire) <= 512 and dns.message.from_wire(wire).flags & dns.flags.TC
    assert not dns.message.from_wire(to_wire(response, 65535)).flags & dns.flags.TC


def test_resolv_conf_and_upstreams(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "resolv.conf"
    conf.write_text("# c\nnameserver 10.0.0.10\nnameserver fd00::a\nnameserver bad\nsearch a.svc b\noptions ndots:5\n")
    parsed = read_resolv_conf(str(conf))
    assert parsed.servers == (("10.0.0.10", 53), ("fd00::a", 53)) and parsed.search == ("a.svc", "b")
    assert read_resolv_conf(str(tmp_path / "missing")).servers == ()
    assert parse_upstreams("127.0.0.1:5353,[::1]:54,10.0.0.1") == (("127.0.0.1", 5353), ("::1", 54),
                                                                    ("10.0.0.1", 53))
    with pytest.raises(AgentError):
        parse_upstreams("dns.example.com:53")


def test_headless_service_pods_with_a_subdomain_get_their_own_names() -> None:
    """Istio's BuildNameTable adds, for a headless Service's endpoints whose pod has a subdomain (a StatefulSet's
    pods: hostname = pod name, subdomain = the service), `<hostname>.<subdomain>.<ns>.svc.<domain>` with the pod's
    one address and short name `<hostname>.<subdomain>`, as Kubernetes DNS names them; the service keeps all."""
    pods = [dataclasses.replace(workload("mysql-0", "10.244.0.7", app="mysql"), hostname="mysql-0", subdomain="mysql"),
            dataclasses.replace(workload("mysql-1", "10.244.0.8", app="mysql"), hostname="mysql-1", subdomain="mysql"),
            workload("mysql-x", "10.244.0.9", app="mysql")]  # no subdomain: only in the service's answer
    snap = make_snapshot(services=[service("mysql", resolution="NONE", origin="Service default/mysql")],
                         workloads=pods)
    table = build_name_table(snap, sidecar())
    got = {h: (list(i.ips), i.registry, i.shortname, i.namespace) for h, i in table.table.items()}
    assert got == {
        "mysql.default.svc.cluster.local": (["10.244.0.7", "10.244.0.8", "10.244.0.9"], "Kubernetes", "mysql",
                                            "default"),
        "mysql-0.mysql.default.svc.cluster.local": (["10.244.0.7"], "Kubernetes", "mysql-0.mysql", "default"),
        "mysql-1.mysql.default.svc.cluster.local": (["10.244.0.8"], "Kubernetes", "mysql-1.mysql", "default"),
    }
    lookup = lookup_table(table, "default", "cluster.local", SEARCH)
    assert _addresses(_ask(lookup, "mysql-0.mysql.default.svc.cluster.local.")) == \
        [("mysql-0.mysql.default.svc.cluster.local.", "A", ["10.244.0.7"])]
    assert _addresses(_ask(lookup, "mysql-1.mysql.default."))[0][2] == ["10.244.0.8"]


class _Upstream(asyncio.DatagramProtocol):
    """A UDP DNS server answering every A query with `address` after `delay` seconds."""

    def __init__(self, address: str, delay: float) -> None:
        self.address, self.delay = address, delay
        self.transport: asyncio.DatagramTransport | None = None
        self.asked = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.asked += 1
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", self.address))
        asyncio.get_running_loop().call_later(self.delay, lambda: self.transport.sendto(  # type: ignore[union-attr]
            response.to_wire(), addr))


async def _forwarded(parallel: bool) -> tuple[list[str], float, int]:
    loop = asyncio.get_running_loop()
    slow_t, _slow = await loop.create_datagram_endpoint(lambda: _Upstream("192.0.2.1", 1.5), ("127.0.0.1", 0))
    fast_t, fast = await loop.create_datagram_endpoint(lambda: _Upstream("192.0.2.2", 0.0), ("127.0.0.1", 0))
    servers = tuple(("127.0.0.1", t.get_extra_info("sockname")[1]) for t in (slow_t, fast_t))
    try:
        proxy = DnsProxy("default", "cluster.local", ResolvConf(servers), parallel=parallel)
        proxy.update(NameTable())  # a table (empty): before the first one the proxy answers SERVFAIL itself
        started = loop.time()
        answer = await proxy.resolve(dns.message.make_query("example.org.", "A"), tcp=False)
        took = loop.time() - started
        return [rr.address for rrset in answer.answer for rr in rrset], took, fast.asked
    finally:
        slow_t.close()
        fast_t.close()


def test_forwarding_asks_upstreams_in_turn_or_all_at_once_with_dns_forward_parallel() -> None:
    """Istio's DNS proxy forwards to the resolv.conf nameservers one after the other (queryUpstream: the first that
    answers, here the slow first one), or with DNS_FORWARD_PARALLEL to all at once, the first reply winning
    (queryUpstreamParallel: the fast second one, without waiting for the slow)."""
    addresses, took, fast_asked = asyncio.run(_forwarded(parallel=False))
    assert addresses == ["192.0.2.1"] and fast_asked == 0  # waited for the slow one (1.5 s < the 5 s timeout)
    assert took >= 1.4
    addresses, _took, fast_asked = asyncio.run(_forwarded(parallel=True))
    assert addresses == ["192.0.2.2"] and fast_asked == 1  # only asking both at once lets the fast one win


def test_istios_agent_dns_metrics_count_queries_forwards_and_failures() -> None:
    """Istio's agent DNS metrics (pkg/dns/client/monitoring.go, `istio_agent_` prefix): every query counts in
    dns_requests_total; a query the table does not answer in dns_upstream_requests_total and the round's duration;
    one no upstream answers (SERVFAIL) in dns_upstream_failures_total."""
    from sailmesh.agent.dns import DnsMetrics
    from sailmesh.metrics import Registry

    async def run() -> str:
        loop = asyncio.get_running_loop()
        up_t, _up = await loop.create_datagram_endpoint(lambda: _Upstream("192.0.2.2", 0.0), ("127.0.0.1", 0))
        registry = Registry()
        servers = (("127.0.0.1", up_t.get_extra_info("sockname")[1]),)
        proxy = DnsProxy("default", "cluster.local", ResolvConf(servers), metrics=DnsMetrics(registry))
        proxy.update(build_name_table(_snapshot(), sidecar()))
        try:
            await proxy.resolve(dns.message.make_query("reviews.default.svc.cluster.local.", "A"), tcp=False)
            await proxy.resolve(dns.message.make_query("example.org.", "A"), tcp=False)
            proxy.resolv = ResolvConf((("127.0.0.1", 9),), ())  # discard port: nothing answers
            proxy.timeout = 0.3
            failed = await proxy.resolve(dns.message.make_query("example.net.", "A"), tcp=False)
            assert failed.rcode() == dns.rcode.SERVFAIL
            return registry.render()
        finally:
            up_t.close()

    page = asyncio.run(run())
    assert "istio_agent_dns_requests_total 3.0" in page
    assert "istio_agent_dns_upstream_requests_total 2.0" in page
    assert "istio_agent_dns_upstream_failures_total 1.0" in page
    assert "istio_agent_dns_upstream_request_duration_seconds_count 2.0" in page
    assert 'istio_agent_dns_upstream_request_duration_seconds_bucket{le="0.005"}' in page
