"""The httpbin sample: the endpoints Istio's security tasks call, in httpbin.org's answer shapes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from sailmesh.samples.httpbin.app import MAX_DELAY, header_name, headers_dict, make_app, pick_status

XFCC = 'By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=ab;Subject="";URI=spiffe://cluster.local/ns/foo/sa/sleep'


@pytest.fixture
async def client() -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    async with TestClient(TestServer(make_app())) as c:
        yield c


async def test_headers_shows_xfcc_under_its_canonical_name(client) -> None:
    """Istio's mTLS tasks read `X-Forwarded-Client-Cert` from httpbin's /headers {"headers": {...}}."""
    r = await client.get("/headers", headers={"x-forwarded-client-cert": XFCC, "x-b3-traceid": "abc"})
    assert r.status == 200
    assert r.content_type == "application/json"
    body = await r.json()
    assert set(body) == {"headers"}
    assert body["headers"]["X-Forwarded-Client-Cert"] == XFCC
    assert body["headers"]["X-B3-Traceid"] == "abc"  # Werkzeug's spelling, as httpbin.org shows it
    assert body["headers"]["Host"].startswith("127.0.0.1:")


async def test_ip_reports_forwarded_for_else_peer(client) -> None:
    assert await (await client.get("/ip")).json() == {"origin": "127.0.0.1"}
    r = await client.get("/ip", headers={"X-Forwarded-For": "10.1.2.3"})
    assert await r.json() == {"origin": "10.1.2.3"}


async def test_get_has_args_headers_origin_url(client) -> None:
    r = await client.get("/get?a=1&b=2&b=3")
    body = await r.json()
    assert set(body) == {"args", "headers", "origin", "url"}
    assert body["args"] == {"a": "1", "b": ["2", "3"]}
    assert body["url"].endswith("/get?a=1&b=2&b=3")
    assert (await client.post("/get")).status == 405


async def test_post_json_form_and_files(client) -> None:
    body = await (await client.post("/post", json={"x": [1, 2]})).json()
    assert set(body) == {"args", "data", "files", "form", "headers", "json", "origin", "url"}
    assert body["json"] == {"x": [1, 2]} and body["data"] == '{"x": [1, 2]}'
    body = await (await client.post("/post", data={"k": "v"})).json()
    assert body["form"] == {"k": "v"} and body["json"] is None
    form = aiohttp.FormData()
    form.add_field("f", b"file text", filename="a.txt")
    form.add_field("k", "v")
    body = await (await client.post("/post", data=form)).json()
    assert body["files"] == {"f": "file text"} and body["form"] == {"k": "v"}
    assert (await client.get("/post")).status == 405


@pytest.mark.parametrize("code", [200, 201, 403, 404, 418, 500, 503])
async def test_status_answers_the_code_for_any_method(client, code: int) -> None:
    for method in ("GET", "POST", "DELETE"):
        r = await client.request(method, f"/status/{code}")
        assert r.status == code
    if code == 418:
        assert "teapot" in await r.text()


async def test_status_rejects_bad_codes(client) -> None:
    assert (await client.get("/status/abc")).status == 400
    assert (await client.get("/status/999")).status == 400


def test_pick_status_picks_from_a_weighted_list() -> None:
    assert pick_status("404") == 404
    assert pick_status("200:0,503:1") == 503
    assert {pick_status("200,201") for _ in range(200)} == {200, 201}
    assert pick_status("200,x") is None


async def test_delay_waits_and_answers(client) -> None:
    start = time.monotonic()
    r = await client.get("/delay/0.2?q=1")
    assert time.monotonic() - start >= 0.2
    body = await r.json()
    assert r.status == 200 and body["args"] == {"q": "1"} and "headers" in body
    assert (await client.get("/delay/soon")).status == 400
    assert MAX_DELAY == 10.0


async def test_anything_echoes_method_path_and_body(client) -> None:
    r = await client.request("PUT", "/anything/some/path?x=y", data=b"raw")
    body = await r.json()
    assert body["method"] == "PUT"
    assert body["data"] == "raw"
    assert body["url"].endswith("/anything/some/path?x=y")
    assert body["args"] == {"x": "y"}


def test_header_names_and_repeats() -> None:
    """Repeated headers are joined with a comma under one canonical name."""
    assert header_name("x-forwarded-client-cert") == "X-Forwarded-Client-Cert"
    assert headers_dict(CIMultiDict([("Accept", "*/*"), ("accept", "text/plain")])) == {"Accept": "*/*,text/plain"}
