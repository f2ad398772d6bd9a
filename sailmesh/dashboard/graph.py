"""The service graph from Istio's standard metrics: two scrapes (or PromQL rates) in, nodes and edges out.

Pure functions, no I/O. The embedded mesh gives us each sidecar's `/stats/prometheus` page twice; `rates` turns
two pages per target into per-second increases (Prometheus's `rate`: a counter that went down was reset, a series
born between the scrapes counts from zero), and `build_graph` turns those rates into Kiali's picture:

    workload --(reporter="source")--> service --(reporter="destination")--> workload

A client-side fault (VirtualService abort) never reaches the destination, so the workload -> service edge uses
what the client's sidecar reported whenever that series exists; only traffic from outside the mesh (no client
sidecar) falls back to the destination's report. mTLS is what the destination reported
(`connection_security_policy="mutual_tls"`; Istio's source reporter always says "unknown").
Health follows Kiali's default tolerances (kiali.io/docs/configuration/health): 5xx above 0 % degraded,
above 10 % failure; 4xx above 10 % degraded, above 20 % failure; gRPC statuses 1-16 like 5xx.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sailmesh.errors import ParseError

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
WANTED = (REQUESTS, DURATION_BUCKET)
UNKNOWN = "unknown"
QUANTILES = (0.5, 0.9, 0.99)

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable


@dataclass(frozen=True)
class Sample:
    """One sample of a scraped page."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True)
class Page:
    """One target's scrape: when it was taken and its samples."""

    time: float
    samples: Sequence[Sample]


Scrape = Mapping[str, Page]  # target (URL) -> its page; a target that failed to answer is absent


@dataclass(frozen=True)
class Rate:
    """A series' per-second increase over the window (`total`: its value at the end, 0 when unknown)."""

    name: str
    labels: Mapping[str, str]
    rate: float
    total: float = 0.0


def parse_text(text: str, names: Sequence[str] = WANTED) -> list[Sample]:
    """The samples named `names` of a Prometheus text page (prometheus-client's parser; other lines skipped first:
    a sidecar's page is mostly Envoy's own stats). Raises ParseError for a malformed page."""
    lines = [line for line in text.splitlines() if line.startswith(tuple(names))]
    out: list[Sample] = []
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for s in family.samples:
                if s.name in names:
                    out.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ParseError(f"not Prometheus text format: {e}") from e
    return out


def rates(prev: Scrape, cur: Scrape) -> list[Rate]:
    """Per-second increases between two scrapes, target by target (a target new in `cur` has no baseline)."""
    out: list[Rate] = []
    for target, page in cur.items():
        before = prev.get(target)
        if before is None or page.time <= before.time:
            continue
        dt = page.time - before.time
        old = {(s.name, s.labels): s.value for s in before.samples}
        for s in page.samples:
            p = old.get((s.name, s.labels), 0.0)
            increase = s.value - p if s.value >= p else s.value  # counter reset: Prometheus counts from zero
            out.append(Rate(s.name, dict(s.labels), increase / dt, s.value))
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts by upper bound `le` (None: no observations).

    Linear interpolation inside the bucket holding the rank; the +Inf bucket answers the highest finite bound.
    """
    if not buckets or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    counts = [buckets[b] for b in bounds]
    for i in range(1, len(counts)):  # Prometheus fixes non-monotonic buckets the same way
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if bounds[i] == math.inf:
        return bounds[-2] if len(bounds) > 1 else None
    lower, below = (bounds[i - 1], counts[i - 1]) if i > 0 else (0.0, 0.0)
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / in_bucket


# -- the graph ---------------------------------------------------------------------------------------------------


def workload_id(namespace: str, name: str) -> str:
    return UNKNOWN if not name or name == UNKNOWN else f"workload:{namespace}/{name}"


def service_id(host: str) -> str:
    return UNKNOWN if not host or host == UNKNOWN else f"service:{host}"


def is_error(labels: Mapping[str, str]) -> bool:
    """An application error as Kiali counts it: HTTP 5xx, or a gRPC status 1-16."""
    code = labels.get("response_code", "")
    if code.startswith("5") and len(code) == 3:
        return True
    grpc = labels.get("grpc_response_status", "")
    return labels.get("request_protocol") == "grpc" and grpc.isdigit() and 1 <= int(grpc) <= 16


def is_client_error(labels: Mapping[str, str]) -> bool:
    code = labels.get("response_code", "")
    return code.startswith("4") and len(code) == 3


def health(rps: float, errors: float, client_errors: float) -> str:
    """Kiali's default tolerances (percent of requests): failure, degraded, healthy; idle with no traffic."""
    if rps <= 0:
        return "idle"
    e5, e4 = 100 * errors / rps, 100 * client_errors / rps
    if e5 > 10 or e4 > 20:
        return "failure"
    if e5 > 0 or e4 > 10:
        return "degraded"
    return "healthy"


@dataclass
class _Traffic:
    """Accumulated request rates and latency buckets of one edge or node."""

    rps: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0
    codes: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    protocols: set[str] = field(default_factory=set)

    def add_request(self, r: Rate) -> None:
        self.rps += r.rate
        if is_error(r.labels):
            self.errors += r.rate
        elif is_client_error(r.labels):
            self.client_errors += r.rate
        self.codes[r.labels.get("response_code", "")] += r.rate
        if r.labels.get("request_protocol"):
            self.protocols.add(r.labels["request_protocol"])

    def add_bucket(self, r: Rate) -> None:
        try:
            self.buckets[float(r.labels.get("le", ""))] += r.rate
        except ValueError:
            pass

    def merge(self, other: _Traffic) -> None:
        self.rps += other.rps
        self.errors += other.errors
        self.client_errors += other.client_errors
        for k, v in other.codes.items():
            self.codes[k] += v
        for le, v in other.buckets.items():
            self.buckets[le] += v
        self.protocols |= other.protocols

    def summary(self) -> dict[str, Any]:
        q = {f"p{round(x * 100)}_ms": _round(histogram_quantile(x, self.buckets)) for x in QUANTILES}
        return {
            "rps": round(self.rps, 3),
            "error_rate": round(self.errors / self.rps, 4) if self.rps > 0 else 0.0,
            **q,
            "health": health(self.rps, self.errors, self.client_errors),
            "codes": {k: round(v, 3) for k, v in sorted(self.codes.items()) if v > 0},
            "protocol": ",".join(sorted(self.protocols)),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


@dataclass
class _Edge:
    by_reporter: dict[str, _Traffic] = field(default_factory=lambda: defaultdict(_Traffic))
    tls: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # destination-reported policy -> weight
    tls_total: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def chosen(self, prefer: str) -> _Traffic:
        """The preferred reporter's traffic when it reported this edge at all, else the other's."""
        if prefer in self.by_reporter:
            return self.by_reporter[prefer]
        return next(iter(self.by_reporter.values()), _Traffic())

    def mtls(self) -> bool:
        """All of the destination's recent requests (or, idle, all it ever saw) arrived over mutual TLS."""
        weights = self.tls if sum(self.tls.values()) > 0 else self.tls_total
        seen = {p for p, w in weights.items() if w > 0}
        return bool(seen) and seen == {"mutual_tls"}


def _node(nodes: dict[str, dict[str, Any]], node_id: str, **attrs: str) -> None:
    node = nodes.setdefault(node_id, {"id": node_id})
    for k, v in attrs.items():
        if v and v != UNKNOWN and not node.get(k):
            node[k] = v


def build_graph(samples: Iterable[Rate]) -> dict[str, Any]:
    """Nodes (workloads, services, `unknown`) and edges with rps, error_rate, p50/p90/p99_ms, mtls and health."""
    nodes: dict[str, dict[str, Any]] = {}
    to_service: dict[tuple[str, str], _Edge] = defaultdict(_Edge)
    to_workload: dict[tuple[str, str], _Edge] = defaultdict(_Edge)
    for r in samples:
        lb = r.labels
        reporter = lb.get("reporter", "")
        src = workload_id(lb.get("source_workload_namespace", ""), lb.get("source_workload", ""))
        svc = service_id(lb.get("destination_service", ""))
        dst = workload_id(lb.get("destination_workload_namespace", ""), lb.get("destination_workload", ""))
        _node(nodes, src, kind="workload" if src != UNKNOWN else UNKNOWN, name=lb.get("source_workload", ""),
              namespace=lb.get("source_workload_namespace", ""), app=lb.get("source_app", ""),
              version=lb.get("source_version", ""))
        _node(nodes, svc, kind="service" if svc != UNKNOWN else UNKNOWN, name=lb.get("destination_service_name", ""),
              namespace=lb.get("destination_service_namespace", ""), host=lb.get("destination_service", ""))
        edges = [to_service[(src, svc)]]
        if dst != UNKNOWN:
            _node(nodes, dst, kind="workload", name=lb.get("destination_workload", ""),
                  namespace=lb.get("destination_workload_namespace", ""), app=lb.get("destination_app", ""),
                  version=lb.get("destination_version", ""))
            edges.append(to_workload[(svc, dst)])
        for edge in edges:
            traffic = edge.by_reporter[reporter]
            if r.name == REQUESTS:
                traffic.add_request(r)
                if reporter == "destination":
                    policy = lb.get("connection_security_policy", UNKNOWN)
                    edge.tls[policy] += r.rate
                    edge.tls_total[policy] += r.total
            elif r.name == DURATION_BUCKET:
                traffic.add_bucket(r)

    edges_out: list[dict[str, Any]] = []
    inbound: dict[str, _Traffic] = defaultdict(_Traffic)
    for prefer, table in (("source", to_service), ("destination", to_workload)):
        for (a, b), edge in table.items():
            traffic = edge.chosen(prefer)
            inbound[b].merge(traffic)
            edges_out.append({"source": a, "destination": b, **traffic.summary(), "mtls": edge.mtls()})
    for node_id, node in nodes.items():
        node.setdefault("kind", UNKNOWN)
        node.setdefault("name", UNKNOWN if node_id == UNKNOWN else node_id.split("/")[-1].split(":")[-1])
        summary = inbound[node_id].summary() if node_id in inbound else _Traffic().summary()
        node.update({k: summary[k] for k in ("rps", "error_rate", "p50_ms", "p90_ms", "p99_ms", "health")})
    edges_out.sort(key=lambda e: (e["source"], e["destination"]))
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges_out}


def graph_from_scrapes(prev: Scrape, cur: Scrape) -> dict[str, Any]:
    """The graph over the window between two scrapes of the same targets."""
    return build_graph(rates(prev, cur))
