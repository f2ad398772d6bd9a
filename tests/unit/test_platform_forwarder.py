"""The plain forwarder of workloads outside the mesh: Kubernetes name resolution, plaintext forwarding, and a
request it cannot deliver closed without an answer (curl's 000), as a pod without a sidecar sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sailmesh.platform.forwarder import Client, Forwarder, ForwardError, NameTable, parse_head, rewrite
from sailmesh.registry.model import Service, ServicePort, Workload

SUFFIX = "cluster.local"


def svc(name: str, ns: str, port: int, target: int = 0) -> Service:
    return Service(hostname=f"{name}.{ns}.svc.{SUFFIX}", name=name, namespace=ns,
                   ports=(ServicePort(port, "http", "HTTP", target),), selector={"app": name})


def table(target: int = 8080) -> NameTable:
    workloads = [
        Workload("httpbin-0", "bar", "127.0.0.1", labels={"app": "httpbin"}),
        Workload("httpbin-0", "foo", "127.0.0.2", labels={"app": "httpbin"}),
        Workload("other-0", "bar", "127.0.0.3", labels={"app": "other"}),
    ]
    return NameTable([svc("httpbin", "bar", 8000, target), svc("httpbin", "foo", 8000, target)], workloads, SUFFIX)


@pytest.mark.parametrize(("host", "client_ns", "expected"), [
    ("httpbin", "bar", "httpbin.bar.svc.cluster.local"),  # short name: the client's namespace (search path)
    ("httpbin", "foo", "httpbin.foo.svc.cluster.local"),
    ("httpbin.bar", "foo", "httpbin.bar.svc.cluster.local"),
    ("httpbin.bar.svc", "foo", "httpbin.bar.svc.cluster.local"),
    ("httpbin.bar.svc.cluster.local", "foo", "httpbin.bar.svc.cluster.local"),
    ("HTTPBIN.Bar.svc.cluster.local.", "foo", "httpbin.bar.svc.cluster.local"),
    ("httpbin", "legacy", None),  # no httpbin Service in legacy in this table
    ("example.com", "foo", None),
    ("127.0.0.9", "foo", None),
])
def test_names_resolve_as_a_pods_resolver_would(host: str, client_ns: str, expected: str | None) -> None:
    assert table().fqdn(host, client_ns) == expected


def test_endpoints_are_selected_workloads_at_the_target_port() -> None:
    t = table(target=8080)
    assert t.endpoints("httpbin.bar", 8000, "foo") == [("127.0.0.1", 8080)]
    assert t.endpoints("httpbin", 8000, "foo") == [("127.0.0.2", 8080)]
    assert t.endpoints("httpbin.bar", 9999, "foo") == []  # the Service has no such port
    assert t.endpoints("example.com", 80, "foo") is None  # not a service: dialled as given
    assert table(target=0).endpoints("httpbin.bar", 8000, "foo") == [("127.0.0.1", 8000)]  # no targetPort


def test_absolute_form_becomes_origin_form_for_one_request() -> None:
    head = (b"GET http://httpbin.bar:8000/headers?a=1 HTTP/1.1\r\nHost: httpbin.bar:8000\r\n"
            b"Proxy-Connection: Keep-Alive\r\nUser-Agent: curl/8\r\n\r\n")
    host, port, out = rewrite(*parse_head(head))
    assert (host, port) == ("httpbin.bar", 8000)
    text = out.decode()
    assert text.startswith("GET /headers?a=1 HTTP/1.1\r\n")
    assert "Proxy-Connection" not in text and "User-Agent: curl/8" in text
    assert text.endswith("Connection: close\r\n\r\n")


def test_origin_form_uses_the_host_header_and_https_needs_connect() -> None:
    host, port, _ = rewrite(*parse_head(b"GET / HTTP/1.1\r\nHost: httpbin\r\n\r\n"))
    assert (host, port) == ("httpbin", 80)
    with pytest.raises(ForwardError):
        rewrite(*parse_head(b"GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n"))
    with pytest.raises(ForwardError):
        parse_head(b"NONSENSE\r\n\r\n")


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs, "host": request.host, "peer": request.remote,
                              "connection": request.headers.get("Connection", "")})


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


async def _forwarder(t: NameTable) -> tuple[Forwarder, str]:
    fwd = Forwarder(t)
    port = await fwd.listen(Client("127.0.0.1", "legacy", "sleep-0"), 0)
    return fwd, f"http://127.0.0.1:{port}"


async def test_forwards_a_service_name_in_plaintext(upstream: TestServer) -> None:
    t = NameTable([svc("httpbin", "bar", 8000, upstream.port or 0)],
                  [Workload("httpbin-0", "bar", "127.0.0.1", labels={"app": "httpbin"})], SUFFIX)
    fwd, proxy = await _forwarder(t)
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(3):  # kept-alive client connections are not reused for another request
                async with s.get("http://httpbin.bar:8000/ip?x=1", proxy=proxy) as r:
                    assert r.status == 200
                    body = await r.json()
                    assert body["path"] == "/ip?x=1"
                    assert body["host"] == "httpbin.bar:8000"  # the Host header is the client's
                    assert body["connection"] == "close"
            async with s.post("http://httpbin.bar.svc.cluster.local:8000/post", data=b"x" * 100_000,
                              proxy=proxy) as r:
                assert r.status == 200
    finally:
        await fwd.stop()


async def test_connect_tunnels_bytes(upstream: TestServer) -> None:
    t = NameTable([svc("httpbin", "bar", 8000, upstream.port or 0)],
                  [Workload("httpbin-0", "bar", "127.0.0.1", labels={"app": "httpbin"})], SUFFIX)
    fwd, proxy = await _forwarder(t)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(proxy.rsplit(":", 1)[1]))
        writer.write(b"CONNECT httpbin.bar:8000 HTTP/1.1\r\nHost: httpbin.bar:8000\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        assert reply.startswith(b"HTTP/1.1 200") and b'"/tunnel"' in reply
        writer.close()
    finally:
        await fwd.stop()


async def _closing_server() -> tuple[asyncio.Server, int]:
    """A peer that accepts and hangs up without answering (what a STRICT sidecar does to plaintext)."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize("case", ["peer hangs up", "no such service port", "nothing listens"])
async def test_undeliverable_requests_close_without_an_answer(case: str) -> None:
    server, port = await _closing_server()
    if case == "nothing listens":
        server.close()
        await server.wait_closed()
    t = NameTable([svc("httpbin", "bar", 8000, port)],
                  [Workload("httpbin-0", "bar", "127.0.0.1", labels={"app": "httpbin"})], SUFFIX)
    fwd, proxy = await _forwarder(t)
    service_port = 9999 if case == "no such service port" else 8000
    try:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                async with s.get(f"http://httpbin.bar:{service_port}/ip", proxy=proxy):
                    pass
    finally:
        await fwd.stop()
        server.close()
        await server.wait_closed()
