"""The process's metrics registry (counters, gauges, histograms), exposed through `prometheus_client`.

One registry type for every process: the control plane (server/metrics.py defines pilot's xDS metrics on
it), the agent's own metrics on its status port, and the Istio standard metrics the agent aggregates
(agent/telemetry.py adds them as a collector). Values are kept here (cheap, thread-safe, one dict per
metric); the exposition format is produced by `prometheus_client` (`generate_latest`), not by hand.

Names are exposed exactly as given, as Istio's are: a counter named `..._total` is typed `counter`;
a counter without the suffix (Istio's `pilot_xds_pushes`, `citadel_server_csr_count`) is exposed as
`untyped`, because the text format 0.0.4 writer types counters only under a `_total` name.

Apart from the CA's two counters below (the CA defines no module of its own yet), metric definitions live
with the code that updates them.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

LabelValues = tuple[str, ...]

# Envoy's default histogram buckets, which Istio's standard histograms use (it sets no buckets of its own).
ENVOY_DEFAULT_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip


def _go_float(value: float) -> str:
    """A bucket bound as prometheus_client writes floats (Go's formatting: 0.5, 1.0, 3.6e+06)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class Collector(Protocol):
    """Anything that yields prometheus_client metric families at scrape time."""

    def collect(self) -> Iterable[Metric]: ...


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        # Same count and every name present is the same label set (no two sets built per call: the ADS server
        # updates metrics per response and per ACK of every proxy).
        if len(labels) == len(self.labelnames):
            try:
                return tuple([str(labels[n]) for n in self.labelnames])
            except KeyError:
                pass
        raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")

    def family(self) -> Metric:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._function: Callable[[], float] | None = None

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from `function` at each render: for a count its owner keeps (unlabelled metrics only)."""
        if self.labelnames:
            raise ValueError(f"{self.name}: a metric with labels cannot read its value from a function")
        self._function = function

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        if self._function is not None:
            return float(self._function())
        return self._values.get(self._key(labels), 0.0)

    def _items(self) -> list[tuple[LabelValues, float]]:
        if self._function is not None:
            return [((), float(self._function()))]
        with self._lock:
            if not self.labelnames and not self._values:
                return [((), 0.0)]  # an unlabelled metric exists from the start, as prometheus_client's do
            return sorted(self._values.items())

    def family(self) -> Metric:
        fam: CounterMetricFamily | UnknownMetricFamily
        if self.name.endswith("_total"):
            fam = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        else:
            fam = UnknownMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, value in self._items():
            fam.add_metric(list(key), value)
        return fam


class Gauge(Counter):
    """A value that goes up and down per label set."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def family(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, value in self._items():
            fam.add_metric(list(key), value)
        return fam


def histogram_family(
    name: str, help_text: str, labelnames: Sequence[str], buckets: Sequence[float],
    series: Iterable[tuple[Sequence[str], Sequence[int], float]],
) -> HistogramMetricFamily:
    """A histogram family from per-series (label values, per-bucket counts incl. +Inf, sum): cumulated here."""
    fam = HistogramMetricFamily(name, help_text, labels=labelnames)
    bounds = [_go_float(b) for b in buckets] + ["+Inf"]
    for values, counts, total in series:
        cumulative, out = 0, []
        for bound, n in zip(bounds, counts, strict=True):
            cumulative += n
            out.append((bound, cumulative))
        fam.add_metric(list(values), out, total)
    return fam


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with a sum and a count, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(self._key(labels), []))

    def family(self) -> Metric:
        with self._lock:
            series = [(k, list(c), self._sums[k]) for k, c in sorted(self._counts.items())]
        return histogram_family(self.name, self.help, self.labelnames, self.buckets, series)


class Registry:
    """Holds metrics by name (and extra collectors); render() is prometheus_client's text exposition."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None:
                if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                    raise ValueError(f"metric {metric.name} already registered differently")
                return existing
            self._metrics[metric.name] = metric
            return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = self._add(Counter(name, help_text, labelnames))
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = self._add(Gauge(name, help_text, labelnames))
        assert isinstance(metric, Gauge)
        return metric

    def histogram(
        self, name: str, help_text: str, buckets: Sequence[float], labelnames: Sequence[str] = ()
    ) -> Histogram:
        metric = self._add(Histogram(name, help_text, buckets, labelnames))
        assert isinstance(metric, Histogram)
        return metric

    def add_collector(self, collector: Collector) -> None:
        """Expose another collector's families after this registry's own metrics."""
        with self._lock:
            self._collectors.append(collector)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's Collector interface: every metric family, at scrape time."""
        with self._lock:
            metrics, collectors = list(self._metrics.values()), list(self._collectors)
        for metric in metrics:
            yield metric.family()
        for collector in collectors:
            yield from collector.collect()

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4), written by prometheus_client."""
        return generate_latest(self._registry).decode("utf-8")


class CitadelMetrics:
    """The CA's metrics with Istio's names (citadel_server_*): the CA increments them as it signs."""

    def __init__(self, registry: Registry) -> None:
        self.csr_count = registry.counter("citadel_server_csr_count", "The number of CSRs received by Citadel server.")
        self.success_cert_issuance_count = registry.counter(
            "citadel_server_success_cert_issuance_count", "The number of certificates issuances that have succeeded."
        )
