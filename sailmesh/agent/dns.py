"""The agent's DNS proxy (Istio's "DNS proxying", ISTIO_META_DNS_CAPTURE): UDP and TCP on 127.0.0.1:15053.

As Istio's agent (pkg/dns/client/dns.go): A and AAAA queries for the hosts of the name table the control plane
sends (generate/nametable.py, over controlplane/nds.py) are answered here, authoritatively, TTL 30 s; a Kubernetes
service also answers as `name.ns.`, `name.ns.svc.` and (in the proxy's namespace) `name.`; each host expanded by
the first search domain of resolv.conf answers with a CNAME to the host plus its addresses in one response (the
first query a stub resolver with ndots:5 sends); `*.example.com` hosts answer names below them. A known host with no
record of the asked type answers NOERROR with no answers (never NXDOMAIN: clients asking A and AAAA at once would
take it for the whole name). Everything else (other names, other types) is forwarded as is to the nameservers of
/etc/resolv.conf, over the protocol it came in on, one after the other; all failing answers SERVFAIL, as does any
query before the first name table arrives (Istio's default when not listening on :53). The listeners and the
forwarding are sailmesh/dnsio.py's, shared with the control plane's mesh DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sailmesh.api.rules.values import is_ip
from sailmesh.dnsio import (
    UPSTREAM_TIMEOUT_S,
    DnsListenError,
    Listener,
    ResolvConf,
    forward,
    servfail,
)
from sailmesh.errors import AgentError
from sailmesh.metrics import Registry
from sailmesh.xds.nds import KUBERNETES

log = logging.getLogger(__name__)

TTL = 30  # Istio's defaultTTLInSeconds: low, so clients that honour it see the latest addresses


def parse_upstreams(text: str) -> tuple[tuple[str, int], ...]:
    """`127.0.0.1:5353,[::1]:53,10.0.0.10` -> ((host, port), ...) (port 53 when not given)."""
    out: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        host, port = part, 53
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
        elif part.count(":") == 1:
            host, _, p = part.partition(":")
            if not p.isdigit():
                raise AgentError(f"DNS upstream {part!r} is not HOST[:PORT]")
            port = int(p)
        if not is_ip(host):
            raise AgentError(f"DNS upstream {part!r} is not an IP address")
        out.append((host, port))
    return tuple(out)


def _fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def proxy_domain_parts(namespace: str, domain_suffix: str) -> list[str]:
    """Istio's proxyDomain (`ns.svc.cluster.local` without the namespace): ["svc", "cluster", "local"]."""
    parts = f"{namespace}.svc.{domain_suffix}".split(".")
    return parts[1:] if parts and parts[0] == namespace else parts


def alt_hosts(hostname: str, info: Any, namespace: str, domain_parts: Sequence[str]) -> set[str]:
    """Istio's generateAltHosts: the names a Kubernetes service answers to, from the proxy's namespace."""
    out = {_fqdn(hostname)}
    domain = ".".join(domain_parts)
    if not domain or not hostname.endswith(domain) or not info.shortname or not info.namespace:
        return out  # another cluster's domain (name.ns would be ambiguous), or no short name (MCS hosts)
    out.add(_fqdn(f"{info.shortname}.{info.namespace}"))
    if namespace == info.namespace:
        out.add(_fqdn(info.shortname))
    out.add(_fqdn(f"{info.shortname}.{info.namespace}.{domain_parts[0]}"))
    out.update(_fqdn(h) for h in info.alt_hosts)
    return out


@dataclass
class LookupTable:
    """Names -> addresses, and search-expanded names -> the name they stand for (Istio's LookupTable)."""

    hosts: set[str] = field(default_factory=set)  # every name the table knows, lower case, with the final dot
    v4: dict[str, list[str]] = field(default_factory=dict)
    v6: dict[str, list[str]] = field(default_factory=dict)
    cname: dict[str, str] = field(default_factory=dict)

    def add(self, names: Iterable[str], ips: Sequence[str], search: Sequence[str]) -> None:
        """Istio's buildDNSAnswers for one host's names."""
        names = set(names)
        v4 = [ip for ip in ips if ipaddress.ip_address(ip).version == 4]
        v6 = [ip for ip in ips if ipaddress.ip_address(ip).version == 6]
        for name in names:
            self.hosts.add(name)
            if v4:
                self.v4[name] = v4
            if v6:
                self.v6[name] = v6
            if search:  # only the first search domain: resolvers try them in order
                expanded = _fqdn(name + search[0])
                if expanded not in names:
                    self.cname[expanded] = name
                    self.hosts.add(expanded)

    def lookup(self, qname: str, qtype: int) -> list[tuple[str, int, list[str]]] | None:
        """Istio's lookupHost: the answer records as (owner, type, values), or None when the name (or the type)
        is not ours and the query goes upstream. An empty list: ours, but no record of that type."""
        question = name = _fqdn(qname)
        wildcard = False
        if name not in self.hosts:
            labels = name.rstrip(".").split(".")
            for i in range(len(labels)):
                candidate = "*." + ".".join(labels[i + 1:]) + "."
                if candidate in self.hosts:
                    wildcard, name = True, candidate
                    break
            else:
                return None
        cnames: list[tuple[str, int, list[str]]] = []
        target = self.cname.get(name)
        if target is not None:
            cnames.append((question, dns.rdatatype.CNAME, [target]))
            name = target
        if qtype == dns.rdatatype.A:
            ips = self.v4.get(name, [])
        elif qtype == dns.rdatatype.AAAA:
            ips = self.v6.get(name, [])
        else:
            return None  # Istio answers only A and AAAA from the table
        if not ips:
            return []
        owner = name if (not wildcard or cnames) else question
        return [*cnames, (owner, qtype, ips)]


def lookup_table(table: Any, namespace: str, domain_suffix: str, search: Sequence[str]) -> LookupTable:
    """A LookupTable from a NameTable message, for a proxy in `namespace` (Istio's UpdateLookupTable)."""
    out = LookupTable()
    parts = proxy_domain_parts(namespace, domain_suffix)
    for hostname, info in table.table.items():
        ips = [ip for ip in info.ips if is_ip(ip)]
        if not ips:
            continue  # malformed addresses
        names = (alt_hosts(hostname, info, namespace, parts) if info.registry == KUBERNETES
                 else {_fqdn(hostname)})
        out.add(names, ips, search)
    return out


def answer_from_table(table: LookupTable | None, query: dns.message.Message) -> dns.message.Message | None:
    """The response when the table answers the query, None when it goes upstream."""
    if not query.question or table is None:
        return servfail(query)
    q = query.question[0]
    records = table.lookup(q.name.to_text(), int(q.rdtype))
    if records is None:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA  # we are the authority for the mesh's names
    for owner, rdtype, values in records:
        if rdtype != dns.rdatatype.CNAME and len(values) > 1:
            values = random.sample(values, len(values))  # round robin, as kube-dns (Istio shuffles too)
        response.answer.append(dns.rrset.from_text_list(owner, TTL, dns.rdataclass.IN,
                                                        dns.rdatatype.RdataType(rdtype), values))
    return response


class DnsMetrics:
    """Istio's agent DNS metrics (pkg/dns/client/monitoring.go, exposed with the agent's `istio_agent_` prefix on
    the merged 15020 page): every query, every query forwarded upstream, every one whose upstreams all failed
    (answered SERVFAIL), and the upstream round's duration."""

    BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0, 5.0)  # Istio's, in order

    def __init__(self, registry: Registry) -> None:
        self.requests = registry.counter("istio_agent_dns_requests_total", "Total number of DNS requests.")
        self.upstream_requests = registry.counter("istio_agent_dns_upstream_requests_total",
                                                  "Total number of DNS requests forwarded to upstream.")
        self.failures = registry.counter("istio_agent_dns_upstream_failures_total",
                                         "Total number of DNS requests forwarded to upstream.")  # Istio's help text
        self.duration = registry.histogram(
            "istio_agent_dns_upstream_request_duration_seconds",
            "Total time in seconds Istio takes to get DNS response from upstream.", self.BUCKETS)


class DnsProxy:
    """The UDP and TCP servers (dnsio.Listener), the current lookup table and the upstream forwarding."""

    def __init__(self, namespace: str, domain_suffix: str, resolv: ResolvConf,
                 timeout: float = UPSTREAM_TIMEOUT_S, parallel: bool = False,
                 metrics: DnsMetrics | None = None) -> None:
        self.metrics = metrics
        self.namespace, self.domain_suffix, self.resolv, self.timeout = namespace, domain_suffix, resolv, timeout
        self.parallel = parallel  # Istio's DNS_FORWARD_PARALLEL: ask every upstream at once, the first answer wins
        self.table: LookupTable | None = None
        self.names: Any = None  # the last NameTable (debugging)
        self._listener = Listener(lambda query, tcp, _client: self.resolve(query, tcp), "DNS proxy")
        self.port = 0
        self.forwarded = 0

    def update(self, names: Any) -> None:
        """A new name table from the control plane."""
        self.table = lookup_table(names, self.namespace, self.domain_suffix, self.resolv.search)
        self.names = names
        log.debug("DNS lookup table: %d names", len(self.table.hosts))

    async def start(self, host: str = "127.0.0.1", port: int = 15053) -> int:
        """Listen on host:port, UDP and TCP (port 0: one free port for both); returns the port."""
        try:
            self.port = await self._listener.start(host, port)
        except DnsListenError as e:
            raise AgentError(str(e)) from e
        log.info("DNS proxy on %s:%d (udp, tcp); upstream %s, search %s", host, self.port,
                 ",".join(f"{h}:{p}" for h, p in self.resolv.servers) or "none", ",".join(self.resolv.search))
        return self.port

    async def close(self) -> None:
        """Stop serving (pending answers are cancelled)."""
        await self._listener.close()

    async def resolve(self, query: dns.message.Message, tcp: bool) -> dns.message.Message:
        """The response to one query: from the table, else from the upstreams: one after the other, the first that
        answers (Istio's queryUpstream), or all at once with the first answer winning (queryUpstreamParallel)."""
        if self.metrics is not None:
            self.metrics.requests.inc()
        local = answer_from_table(self.table, query)
        if local is not None:
            return local
        self.forwarded += 1
        started = asyncio.get_running_loop().time()
        answer = await forward(query, self.resolv.servers, self.timeout, tcp, self.parallel)
        if self.metrics is not None:
            self.metrics.upstream_requests.inc()
            self.metrics.duration.observe(asyncio.get_running_loop().time() - started)
            if answer is None:
                self.metrics.failures.inc()
        return answer if answer is not None else servfail(query)
