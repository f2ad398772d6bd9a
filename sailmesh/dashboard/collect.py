"""Where the dashboard's numbers come from: the sidecars' own metrics pages, or a Prometheus, polled on a timer.

A `Collector` runs only while someone looks: the first API request starts it, and it stops after `idle` seconds
without one (a control plane with thousands of proxies should not scrape them all for a closed browser tab).
Parsing a page is CPU work, so it runs off the event loop that also serves xDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from sailmesh.dashboard.graph import (
    DURATION_BUCKET,
    REQUESTS,
    Page,
    Rate,
    Scrape,
    build_graph,
    parse_text,
    rates,
)
from sailmesh.errors import ParseError, SailmeshError

log = logging.getLogger(__name__)

# The labels the graph reads; PromQL keeps exactly these (sum by) so the two sources build the same graph.
GRAPH_LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_app", "source_version",
    "destination_service", "destination_service_name", "destination_service_namespace", "destination_workload",
    "destination_workload_namespace", "destination_app", "destination_version", "request_protocol",
    "response_code", "grpc_response_status", "connection_security_policy",
)


class SourceError(SailmeshError):
    """The dashboard's data source (a Prometheus) could not be queried."""


class Source(Protocol):
    """Gives the rates of the last window, or None while it has only one observation."""

    name: str

    async def sample(self) -> list[Rate] | None: ...

    def reset(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class ScrapeSource:
    """The embedded mesh: scrape every proxy's merged metrics page and diff successive scrapes."""

    name = "sidecars"

    def __init__(self, targets: Callable[[], Iterable[str]], session: aiohttp.ClientSession,
                 timeout: float = 3.0, concurrency: int = 16) -> None:
        self.targets = targets
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.limit = asyncio.Semaphore(concurrency)
        self.last: Scrape | None = None
        self.down: dict[str, str] = {}

    async def _fetch(self, url: str) -> Fetched:
        async with self.limit:
            started = time.time()
            try:
                async with self.session.get(url, timeout=self.timeout) as resp:
                    if resp.status != 200:
                        return Fetched(url, started, None, f"HTTP {resp.status}")
                    return Fetched(url, started, await resp.text(), "")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                return Fetched(url, started, None, f"unreachable: {str(e) or type(e).__name__}")

    async def scrape(self) -> Scrape:
        fetched = await asyncio.gather(*(self._fetch(u) for u in sorted(set(self.targets()))))
        pages, down = await asyncio.to_thread(_parse_pages, fetched)
        self.down = down
        return pages

    async def sample(self) -> list[Rate] | None:
        cur = await self.scrape()
        prev, self.last = self.last, cur
        return None if prev is None else rates(prev, cur)

    def reset(self) -> None:
        """Forget the last scrape (polling resumes after a pause: no rate over the pause)."""
        self.last = None

    def status(self) -> dict[str, Any]:
        return {"source": self.name, "targets": len(self.last or {}), "down": dict(sorted(self.down.items()))}


@dataclass(frozen=True)
class Fetched:
    """One target's answer: its page text, or why there is none."""

    url: str
    started: float
    text: str | None
    error: str


def _parse_pages(fetched: list[Fetched]) -> tuple[dict[str, Page], dict[str, str]]:
    pages: dict[str, Page] = {}
    down: dict[str, str] = {}
    for f in fetched:
        if f.text is None:
            down[f.url] = f.error
            continue
        try:
            pages[f.url] = Page(f.started, parse_text(f.text))
        except ParseError as e:
            down[f.url] = str(e)
    return pages, down


def prometheus_url(url: str) -> str:
    """A Prometheus base URL (http or https, no query); raises SourceError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SourceError(f"--prometheus wants an http(s) base URL such as http://127.0.0.1:9090, not {url!r}")
    return url.rstrip("/")


def promql_queries(window: str) -> dict[str, str]:
    """The PromQL the graph needs: rates over `window`, and the counters' totals (the lock of an idle edge)."""
    by = ", ".join(GRAPH_LABELS)
    return {
        "requests": f"sum by ({by}) (rate({REQUESTS}[{window}]))",
        "totals": f"sum by ({by}) ({REQUESTS})",
        "buckets": f"sum by ({by}, le) (rate({DURATION_BUCKET}[{window}]))",
    }


def rates_from_promql(requests: list[dict[str, Any]], totals: list[dict[str, Any]],
                      buckets: list[dict[str, Any]]) -> list[Rate]:
    """Prometheus instant-query vectors (`data.result`) as the graph's rates."""
    def key(item: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(item.get("metric", {}).items()))

    def value(item: dict[str, Any]) -> float:
        try:
            return float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return 0.0

    total = {key(t): value(t) for t in totals}
    out = [Rate(REQUESTS, dict(key(r)), value(r), total.get(key(r), 0.0)) for r in requests]
    out += [Rate(DURATION_BUCKET, dict(key(b)), value(b)) for b in buckets]
    return out


class PrometheusSource:
    """A Prometheus that scrapes the mesh (Istio's scrape configuration): instant queries each interval."""

    name = "prometheus"

    def __init__(self, url: str, session: aiohttp.ClientSession, window: str = "1m", timeout: float = 10.0) -> None:
        self.url = prometheus_url(url)
        self.session = session
        self.queries = promql_queries(window)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.error = ""

    async def _query(self, promql: str) -> list[dict[str, Any]]:
        try:
            async with self.session.get(f"{self.url}/api/v1/query", params={"query": promql},
                                        timeout=self.timeout) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise SourceError(f"Prometheus at {self.url}: {str(e) or type(e).__name__}") from e
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else body
            raise SourceError(f"Prometheus at {self.url} refused the query: {detail}")
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []

    async def sample(self) -> list[Rate] | None:
        try:
            results = await asyncio.gather(*(self._query(q) for q in self.queries.values()))
        except SourceError as e:
            self.error = str(e)
            raise
        self.error = ""
        return rates_from_promql(*results)

    def reset(self) -> None:
        """Nothing kept between queries."""

    def status(self) -> dict[str, Any]:
        return {"source": self.name, "url": self.url, "error": self.error}


class Collector:
    """Polls one source every `interval` seconds and keeps the last `keep` graphs (the pages' charts)."""

    def __init__(self, source: Source, interval: float = 5.0, keep: int = 120, idle: float = 300.0,
                 first_interval: float = 1.0) -> None:
        self.source = source
        self.interval = interval
        self.first_interval = first_interval
        self.idle = idle
        self.history: deque[dict[str, Any]] = deque(maxlen=keep)
        self.error = ""
        self.last_used = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def touch(self) -> None:
        """Someone looked: keep running (start if stopped)."""
        self.last_used = time.monotonic()
        if not self.running:
            self._task = asyncio.create_task(self._run())

    async def first_graph(self, timeout: float) -> None:
        """Wait (up to timeout) until there is a graph to show."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    def latest(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None

    async def _run(self) -> None:
        self.source.reset()
        first = True
        while time.monotonic() - self.last_used < self.idle:
            started = time.time()
            try:
                sampled = await self.source.sample()
            except SourceError as e:
                self.error = str(e)
                sampled = None
                self._ready.set()  # nothing to wait for: the API answers with the error at once
            if sampled is not None:
                self.error = ""
                graph = await asyncio.to_thread(build_graph, sampled)
                graph["time"] = started
                self.history.append(graph)
                self._ready.set()
            await asyncio.sleep(self.first_interval if first and sampled is None else self.interval)
            first = False
        log.info("dashboard: nobody looked for %.0f s; %s polling stopped", self.idle, self.source.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
