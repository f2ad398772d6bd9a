"""Istio's HTTP standard metrics from Envoy's own stats: the stats access logger's series, renamed at scrape time.

Envoy keeps `envoy_sailmesh_istio_*` counters and histograms tagged with raw request values (telemetry/
stats_logger.py). When the status port is scraped, `take` removes those series from Envoy's page and turns them
into rows of `IstioMetrics` (agent/telemetry.py), which resolves the tags into Istio's labels exactly as it does
for access-log entries and serves them as istio_requests_total & co. with the rest of its families.

A change of the Telemetry overrides creates a new logger (a new `ov` tag) while the old listener drains, and
Envoy keeps the old series as long as the old logger lives: per reporter, only the series of the overrides whose
requests counted most recently are served (the old ones leave the page, as with the stream's newest overrides).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from sailmesh.telemetry.names import ENVOY_PREFIX, KEY_FIELDS, KEY_SEPARATOR, T_EXPR, T_GRPC_MESSAGES, T_KEY, T_POLICY
from sailmesh.telemetry.peer import UNKNOWN

if TYPE_CHECKING:
    from sailmesh.agent.telemetry import IstioMetrics

_TYPE_LINE = "# TYPE " + ENVOY_PREFIX
_HISTOGRAMS = {"request_duration_milliseconds": 1, "request_bytes": 3, "response_bytes": 5}  # row index
_COUNTER = "requests_total"
_IGNORED = (T_GRPC_MESSAGES, "le")


def split_page(text: str) -> tuple[str, str]:
    """(Envoy's page without the logger's series, those series) — Envoy's other stats pass through unchanged."""
    if ENVOY_PREFIX not in text:
        return text, ""
    keep, ours = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith(ENVOY_PREFIX) or line.startswith(_TYPE_LINE):
            ours.append(line)
        else:
            keep.append(line)
    return "".join(keep), "".join(ours)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in _IGNORED))


def _raw(key: str) -> tuple[Any, ...] | None:
    """The label resolver's raw key (agent/telemetry.py `_resolve`) from the key tag (telemetry/stats_logger.py);
    None if it is not one (another Envoy's config)."""
    f = key.split(KEY_SEPARATOR)
    if len(f) != KEY_FIELDS:
        return None
    reporter, services, peer_md, cluster, authority, content_type, code, grpc_status, flags, peer_uri, own_uri = f
    grpc = content_type.startswith("application/grpc")
    return (reporter, tuple(s for s in services.split(",") if s), peer_md, cluster, authority,
            "grpc" if grpc else "http", code, grpc_status if grpc else "", flags or "-",
            peer_uri.split(",", 1)[0].strip(), own_uri.split(",", 1)[0].strip())


def _extras(tags: dict[str, str]) -> tuple[str, ...]:
    n = sum(1 for k in tags if k.startswith(T_EXPR) and k[len(T_EXPR):].isdigit())
    return tuple(tags.get(f"{T_EXPR}{i}") or UNKNOWN for i in range(n))


class EnvoyIstioStats:
    """Reads the logger's series at each scrape into `metrics` (replacing the previous scrape's rows)."""

    def __init__(self, metrics: IstioMetrics, buckets: tuple[float, ...],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.buckets = buckets
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, float]] = {}  # (reporter, overrides) -> (count, changed at)
        # Envoy frees a listener's stats with the listener (an update drains the old one): a series that vanished
        # or went down was reset, and what it had counted is kept here so Istio's counters only go up.
        self._last: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        self._base: dict[tuple[tuple[str, str], ...], list[Any]] = {}

    def take(self, page: str) -> str:
        """Envoy's page without the logger's series, which become the metrics' Envoy rows."""
        rest, ours = split_page(page)
        self.metrics.envoy_http = self.rows(ours) if ours or self._last or self._base else {}
        return rest

    def _new_row(self) -> list[Any]:
        nb = len(self.buckets) + 1
        return [0, [0] * nb, 0.0, [0] * nb, 0.0, [0] * nb, 0.0, 0, 0]

    def _disjoint(self, cumulative: dict[float, float]) -> list[int]:
        """Per-bucket counts in our buckets from Envoy's cumulative `le` counts (the same bounds by default)."""
        bounds = sorted(cumulative)
        out, last = [], 0.0
        for b in (*self.buckets, float("inf")):
            i = bisect.bisect_right(bounds, b) - 1
            cur = cumulative[bounds[i]] if i >= 0 else 0.0
            out.append(int(cur - last))
            last = cur
        return out

    def rows(self, text: str) -> dict[tuple[Any, ...], list[Any]]:
        """Rows keyed like IstioMetrics' (labels, overrides, expression values) from the logger's series."""
        series: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        cumulative: dict[tuple[tuple[tuple[str, str], ...], int], dict[float, float]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                name = s.name.removeprefix(ENVOY_PREFIX)
                key = _key(s.labels)
                if name == _COUNTER:
                    row = series.get(key) or series.setdefault(key, self._new_row())
                    n = int(s.value)
                    row[0] += n
                    msgs = s.labels.get(T_GRPC_MESSAGES, "")
                    if "," in msgs:
                        req, _, resp = msgs.partition(",")
                        if req.isdigit() and resp.isdigit():
                            row[7] += n * int(req)
                            row[8] += n * int(resp)
                    continue
                base, _, part = name.rpartition("_")
                i = _HISTOGRAMS.get(base)
                if i is None:
                    continue
                row = series.get(key) or series.setdefault(key, self._new_row())
                if part == "bucket":
                    le = s.labels.get("le", "+Inf")
                    cumulative.setdefault((key, i), {})[float(le)] = s.value
                elif part == "sum":
                    row[i + 1] += s.value
        for (key, i), cum in cumulative.items():
            series[key][i] = self._disjoint(cum)
        series = self._monotonic(series)
        current = self._current_policies(series)
        out: dict[tuple[Any, ...], list[Any]] = {}
        for key, row in series.items():
            tags = dict(key)
            policy = tags.get(T_POLICY, "")
            raw = _raw(tags.get(T_KEY, ""))
            if raw is None or current.get(raw[0]) != policy:
                continue
            labels = self.metrics.resolve(raw, True)
            k = (labels, policy, _extras(tags))
            cur = out.get(k)
            out[k] = row if cur is None else _add(cur, row)
        return out

    def _monotonic(self, series: dict[tuple[tuple[str, str], ...], list[Any]]
                   ) -> dict[tuple[tuple[str, str], ...], list[Any]]:
        """The series plus what their earlier incarnations counted (Envoy's counters restart at a new listener)."""
        for key, last in self._last.items():
            cur = series.get(key)
            if cur is None or _decreased(cur, last):
                base = self._base.get(key)
                self._base[key] = last if base is None else _add(base, last)
        self._last = series
        if len(self._base) > _MAX_SERIES:  # bounded: the oldest resets are forgotten
            for key in list(self._base)[: len(self._base) - _MAX_SERIES]:
                del self._base[key]
        out = dict(series)
        for key, base in self._base.items():
            cur = out.get(key)
            out[key] = base if cur is None else _add(base, cur)
        return out

    def _current_policies(self, series: dict[tuple[tuple[str, str], ...], list[Any]]) -> dict[str, str]:
        """Per reporter, the overrides whose requests counted most recently (the newest listener's logger)."""
        totals: dict[tuple[str, str], float] = {}
        for key, row in series.items():
            tags = dict(key)
            k = (tags.get(T_KEY, "").split(KEY_SEPARATOR, 1)[0], tags.get(T_POLICY, ""))
            totals[k] = totals.get(k, 0) + row[0]
        now = self.clock()
        for k, n in totals.items():
            last = self._seen.get(k)
            if last is None or last[0] != n:
                self._seen[k] = (n, now)
        for k in [k for k in self._seen if k not in totals]:
            del self._seen[k]
        best: dict[str, tuple[float, float, str]] = {}
        for (reporter, policy), (n, at) in self._seen.items():
            cand = (at, n, policy)
            if reporter not in best or cand[:2] > best[reporter][:2]:
                best[reporter] = cand
        return {r: b[2] for r, b in best.items()}


_MAX_SERIES = 100_000


def _decreased(cur: list[Any], last: list[Any]) -> bool:
    """Whether any count of a row went down (the series was reset)."""
    for c, p in zip(cur, last, strict=True):
        if isinstance(c, list):
            if any(x < y for x, y in zip(c, p, strict=True)):
                return True
        elif c < p:
            return True
    return False


def _add(a: list[Any], b: list[Any]) -> list[Any]:
    return [x + y if not isinstance(x, list) else [p + q for p, q in zip(x, y, strict=True)] for x, y in zip(a, b,
                                                                                                          strict=True)]


__all__ = ["EnvoyIstioStats", "split_page"]
