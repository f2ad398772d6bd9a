"""productpage and reviews against recording test servers: forwarded headers, login's end-user, the 3 s timeout with
one retry on reviews, the original's error texts, and outbound calls through HTTP_PROXY (the sidecar's role)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sailmesh.processes import free_port
from tests.e2e.test_bookinfo_harness import backend_env, running

pytestmark = pytest.mark.e2e

DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
DETAILS_DOC = {
    "id": 0,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}
REVIEWS_DOC = {
    "id": "0",
    "podname": "recorder",
    "clustername": "null",
    "reviews": [{"reviewer": "Reviewer1", "text": "recorded review"}],
}
TRACE_HEADERS = {
    "x-request-id": "5b0a2f7e-0000-4000-8000-000000000001",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "0",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
    "tracestate": "vendor=value",
    "x-ot-span-context": "ot-context",
    "x-datadog-trace-id": "123",
    "x-datadog-parent-id": "456",
    "x-datadog-sampling-priority": "1",
    "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
    "sw8": "1-abc",
    "authorization": "Bearer test-token",
    "user-agent": "bookinfo-test/1.0",
}


@dataclass
class Recorder:
    """An HTTP server that records each request's headers and answers with a fixed status and JSON body."""

    body: Any
    status: int = 200
    hang: bool = False
    requests: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        if self.hang:
            await self.release.wait()
        return web.json_response(self.body, status=self.status)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def recorders() -> AsyncIterator[dict[str, Recorder]]:
    """details, reviews and ratings recorders on free loopback ports."""
    recs = {
        "details": Recorder(DETAILS_DOC),
        "reviews": Recorder(REVIEWS_DOC),
        "ratings": Recorder({"id": 0, "ratings": {"Reviewer1": 3, "Reviewer2": 1}}),
    }
    runners = []
    try:
        for rec in recs.values():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", rec.handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            await runner.setup()
            runners.append(runner)
            rec.port = free_port()
            await web.TCPSite(runner, "127.0.0.1", rec.port).start()
        yield recs
    finally:
        for rec in recs.values():
            rec.release.set()
        for runner in runners:
            await runner.cleanup()


def page_env(recs: dict[str, Recorder], **extra: str) -> dict[str, str]:
    return {**backend_env(recs["details"].addr, recs["reviews"].addr, recs["ratings"].addr), **extra}


async def test_trace_and_context_headers_forwarded(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """Istio's productpage copies x-request-id, B3, W3C, Datadog, ... onto its calls to details and reviews."""
    async with running(tmp_path, ("productpage", page_env(recorders))) as (page,):
        async with aiohttp.ClientSession() as client:
            headers = {**TRACE_HEADERS, "x-not-forwarded": "nope", "end-user": "spoofed"}
            async with client.get(page.url + "/productpage", headers=headers) as resp:
                assert resp.status == 200
                html = await resp.text()
    assert "recorded review" in html and "<dt>Publisher:</dt>PublisherA" in html
    for name in ("details", "reviews"):
        (got,) = recorders[name].requests
        assert got["path"] == ("/details/0" if name == "details" else "/reviews/0")
        for key, value in TRACE_HEADERS.items():
            assert got.get(key) == value, (name, key)
        assert "x-not-forwarded" not in got
        assert "end-user" not in got  # only set from the signed-in session, never copied from the request


async def test_login_sets_session_and_forwards_end_user(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    async with running(tmp_path, ("productpage", page_env(recorders))) as (page,):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.post(
                page.url + "/login", data={"username": "jason", "passwd": "x"}, allow_redirects=False
            ) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/productpage"
                assert "session" in resp.cookies and resp.cookies["session"]["httponly"]
            async with client.get(page.url + "/productpage", headers={"x-request-id": "r1"}) as resp:
                html = await resp.text()
            assert 'jason ( <a href="logout">sign out</a> )' in html
            for name in ("details", "reviews"):
                got = recorders[name].requests[-1]
                assert got["end-user"] == "jason" and got["x-request-id"] == "r1"
            async with client.get(
                page.url + "/logout", headers={"Referer": f"{page.url}/productpage?u=normal"}, allow_redirects=False
            ) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/productpage?u=normal"
            async with client.get(page.url + "/productpage") as resp:
                assert 'name="username"' in await resp.text()
            assert "end-user" not in recorders["reviews"].requests[-1]
        # A session cookie not signed by productpage is ignored.
        async with aiohttp.ClientSession() as client:
            forged = "eyJ1c2VyIjoiamFzb24ifQ.AAAA"
            async with client.get(page.url + "/productpage", headers={"Cookie": f"session={forged}"}) as resp:
                assert resp.status == 200
            assert "end-user" not in recorders["reviews"].requests[-1]


async def test_reviews_timeout_then_one_retry(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """The original's deliberate bug (Istio's fault-injection task): reviews gets 3 s x 2 attempts, details 3 s x 1.
    The timeout is shortened through BACKEND_TIMEOUT_SECONDS to keep the test fast."""
    recorders["reviews"].hang = True
    recorders["details"].hang = True
    env = page_env(recorders, BACKEND_TIMEOUT_SECONDS="0.4")
    async with running(tmp_path, ("productpage", env)) as (page,), aiohttp.ClientSession() as client:
        started = time.monotonic()
        async with client.get(page.url + "/productpage") as resp:
            html = await resp.text()
        elapsed = time.monotonic() - started
    assert resp.status == 200
    assert len(recorders["details"].requests) == 1
    assert len(recorders["reviews"].requests) == 2
    assert 1.2 - 0.05 <= elapsed < 6.0, elapsed  # 0.4 (details) + 2 x 0.4 (reviews); 6 s would be the defaults
    assert "Error fetching product details!" in html and DETAILS_ERROR in html
    assert "Error fetching product reviews!" in html and REVIEWS_ERROR in html


async def test_backends_down_show_error_texts(tmp_path: pathlib.Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    async with running(tmp_path, ("productpage", backend_env(closed, closed, closed))) as (page,):
        async with aiohttp.ClientSession() as client:
            async with client.get(page.url + "/productpage") as resp:
                html = await resp.text()
                assert resp.status == 200
            assert DETAILS_ERROR in html and REVIEWS_ERROR in html
            for path, text in (
                ("/0", DETAILS_ERROR),
                ("/0/reviews", REVIEWS_ERROR),
                ("/0/ratings", "Sorry, product ratings are currently unavailable for this book."),
            ):
                async with client.get(page.url + "/api/v1/products" + path) as resp:
                    assert resp.status == 500 and await resp.json() == {"error": text}


async def test_backend_error_status_passed_on_after_retry(
    tmp_path: pathlib.Path, recorders: dict[str, Recorder]
) -> None:
    """Any non-200 from reviews is retried once; the API answers with the backend's last status."""
    recorders["reviews"].status = 503
    async with running(tmp_path, ("productpage", page_env(recorders))) as (page,), aiohttp.ClientSession() as c:
        async with c.get(page.url + "/api/v1/products/0/reviews") as resp:
            assert resp.status == 503 and await resp.json() == {"error": REVIEWS_ERROR}
    assert len(recorders["reviews"].requests) == 2


async def test_reviews_forwards_headers_to_ratings(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """reviews v2 copies the trace headers and end-user to ratings and colours the stars ratings returns."""
    env = {
        "SERVICE_VERSION": "v2",
        "RATINGS_HOSTNAME": "127.0.0.1",
        "RATINGS_SERVICE_PORT": str(recorders["ratings"].port),
    }
    async with running(tmp_path, ("reviews", env)) as (reviews,), aiohttp.ClientSession() as client:
        headers = {**TRACE_HEADERS, "end-user": "jason", "cookie": "session=abc"}
        async with client.get(reviews.url + "/reviews/3", headers=headers) as resp:
            body = await resp.json()
    (got,) = recorders["ratings"].requests
    assert got["path"] == "/ratings/3"
    for key, value in {**TRACE_HEADERS, "end-user": "jason", "cookie": "session=abc"}.items():
        assert got.get(key) == value, key
    assert [r["rating"] for r in body["reviews"]] == [{"stars": 3, "color": "black"}, {"stars": 1, "color": "black"}]


async def test_reviews_when_ratings_unavailable(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """A failing or slow ratings service: each review carries the original's error (red: 2.5 s timeout, shortened)."""
    recorders["ratings"].status = 503
    recorders["details"].hang = True  # stands in for a ratings service that never answers
    envs = [
        {"STARS": "black", "RATINGS_SERVICE_PORT": str(recorders["ratings"].port)},
        {"STARS": "red", "RATINGS_SERVICE_PORT": str(free_port())},
        {"STARS": "red", "RATINGS_SERVICE_PORT": str(recorders["details"].port), "RATINGS_TIMEOUT_SECONDS": "0.3"},
    ]
    error = {"error": "Ratings service is currently unavailable"}
    specs = [("reviews", {"RATINGS_HOSTNAME": "127.0.0.1", **e}) for e in envs]
    async with running(tmp_path, *specs) as apps, aiohttp.ClientSession() as client:
        for app in apps:
            started = time.monotonic()
            async with client.get(app.url + "/reviews/0") as resp:
                assert resp.status == 200
                body = await resp.json()
            assert [r["rating"] for r in body["reviews"]] == [error, error], app.log()
            assert time.monotonic() - started < 2.4  # below the 2.5 s default: RATINGS_TIMEOUT_SECONDS applies


async def test_outbound_calls_go_through_http_proxy(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """With HTTP_PROXY set (the sidecar's outbound listener in the mesh), productpage sends absolute-URI requests
    for http://details:9080 and http://reviews:9080 to the proxy; NO_PROXY hosts are called directly."""
    seen: list[tuple[str, str]] = []
    upstream = {"details:9080": recorders["details"].addr, "reviews:9080": recorders["reviews"].addr}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ")
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                host = next(v for k, v in headers.items() if k.lower() == "host")
                seen.append((lines[0], host))
                authority, _, path = target.removeprefix("http://").partition("/")
                fwd = {k: v for k, v in headers.items() if k.lower() not in ("host", "proxy-connection", "connection")}
                async with (
                    aiohttp.ClientSession() as client,
                    client.request(method, f"http://{upstream[authority]}/{path}", headers=fwd) as resp,
                ):
                    body = await resp.read()
                writer.write(
                    f"HTTP/1.1 {resp.status} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    env = {
        "HTTP_PROXY": f"http://127.0.0.1:{proxy_port}",
        "NO_PROXY": "127.0.0.1",
        "RATINGS_HOSTNAME": "127.0.0.1",
        "RATINGS_SERVICE_PORT": str(recorders["ratings"].port),
    }
    try:
        async with running(tmp_path, ("productpage", env)) as (page,), aiohttp.ClientSession() as client:
            async with client.get(page.url + "/productpage", headers={"x-request-id": "via-proxy"}) as resp:
                html = await resp.text()
            async with client.get(page.url + "/api/v1/products/0/ratings") as resp:
                assert resp.status == 200 and (await resp.json())["ratings"]["Reviewer1"] == 3
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert ("GET http://details:9080/details/0 HTTP/1.1", "details:9080") in seen
    assert ("GET http://reviews:9080/reviews/0 HTTP/1.1", "reviews:9080") in seen
    assert len(seen) == 2  # ratings at 127.0.0.1 matched NO_PROXY and went direct
    assert recorders["details"].requests[0]["x-request-id"] == "via-proxy"
    assert "<dt>Publisher:</dt>PublisherA" in html and "recorded review" in html
    assert json.dumps(recorders["ratings"].requests[0]["path"]) == '"/ratings/0"'


async def test_flood_factor_sends_extra_reviews_calls(tmp_path: pathlib.Path, recorders: dict[str, Recorder]) -> None:
    """The original's FLOOD_FACTOR: each /productpage also sends that many extra (ignored) reviews requests."""
    async with running(tmp_path, ("productpage", page_env(recorders, FLOOD_FACTOR="3"))) as (page,):
        async with aiohttp.ClientSession() as client, client.get(page.url + "/productpage") as resp:
            assert resp.status == 200
    assert len(recorders["reviews"].requests) == 4 and len(recorders["details"].requests) == 1
