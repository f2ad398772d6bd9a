"""httpbin: the endpoints of httpbin.org that Istio's docs use (/ip, /headers, /response-headers, /get, /post,
/status, /delay, /anything), answering in httpbin.org's JSON shapes, so the security tasks' checks (status codes, the
X-Forwarded-Client-Cert header the server sidecar adds) read the same."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from sailmesh.samples.bookinfo.common import run

SERVICE = "httpbin"
MAX_DELAY = 10.0  # httpbin.org caps /delay/<n> at 10 seconds
_STATUS_BODY: dict[int, str] = {418: "I'm a teapot!"}


def header_name(name: str) -> str:
    """httpbin.org's (Werkzeug's) spelling: each dash-separated part capitalised, `x-b3-traceid` -> `X-B3-Traceid`."""
    return "-".join(part.capitalize() for part in name.split("-"))


def headers_dict(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """Request headers as httpbin.org shows them: canonical names, repeated headers joined with a comma."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = header_name(name)
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def origin(request: web.Request) -> str:
    """The caller as httpbin.org reports it: X-Forwarded-For when present, else the peer address."""
    return request.headers.get("X-Forwarded-For") or (request.remote or "")


def args_dict(request: web.Request) -> dict[str, str | list[str]]:
    """Query arguments; a repeated argument becomes a list, as httpbin.org does."""
    out: dict[str, str | list[str]] = {}
    for key in request.query:
        values = request.query.getall(key)
        out[key] = values[0] if len(values) == 1 else list(values)
    return out


def url_of(request: web.Request) -> str:
    """The URL the client asked for, built from the Host header."""
    return f"{request.scheme}://{request.host}{request.path_qs}"


def pretty(body: Mapping[str, Any], status: int = 200) -> web.Response:
    """JSON indented by two spaces with a trailing newline, httpbin.org's layout."""
    return web.Response(text=json.dumps(body, indent=2) + "\n", status=status, content_type="application/json")


async def body_fields(request: web.Request) -> dict[str, Any]:
    """data, form, files and json of a request body, as httpbin.org reports them."""
    out: dict[str, Any] = {"data": "", "files": {}, "form": {}, "json": None}
    ctype = request.content_type
    if ctype == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
                continue
            text = (await part.read(decode=True)).decode("utf-8", errors="replace")
            (out["files"] if part.filename else out["form"])[part.name] = text
        return out
    raw = await request.read()
    if ctype == "application/x-www-form-urlencoded":
        form = await request.post()
        out["form"] = {k: (form.getall(k)[0] if len(form.getall(k)) == 1 else list(form.getall(k))) for k in form}
        return out
    out["data"] = raw.decode("utf-8", errors="replace")
    if raw:
        try:
            out["json"] = json.loads(raw)
        except ValueError:
            out["json"] = None
    return out


async def ip(request: web.Request) -> web.Response:
    """GET /ip: {"origin": ...}."""
    return pretty({"origin": origin(request)})


async def headers(request: web.Request) -> web.Response:
    """GET /headers: {"headers": {...}} (so X-Forwarded-Client-Cert is visible)."""
    return pretty({"headers": headers_dict(request.headers)})


async def response_headers(request: web.Request) -> web.Response:
    """GET /response-headers?k=v: each query parameter set as a response header, and echoed as JSON."""
    args = args_dict(request)
    resp = pretty(args)
    for k, v in request.query.items():
        resp.headers.add(k, v)
    return resp


async def user_agent(request: web.Request) -> web.Response:
    """GET /user-agent."""
    return pretty({"user-agent": request.headers.get("User-Agent", "")})


async def get(request: web.Request) -> web.Response:
    """GET /get: args, headers, origin, url."""
    return pretty({"args": args_dict(request), "headers": headers_dict(request.headers), "origin": origin(request),
                   "url": url_of(request)})


async def with_body(request: web.Request) -> web.Response:
    """POST /post, PUT /put, PATCH /patch, DELETE /delete: args, data, files, form, headers, json, origin, url."""
    fields = await body_fields(request)
    return pretty({"args": args_dict(request), **fields, "headers": headers_dict(request.headers),
                   "origin": origin(request), "url": url_of(request)})


async def anything(request: web.Request) -> web.Response:
    """/anything[/...] with any method: everything /post reports, plus the method."""
    fields = await body_fields(request)
    return pretty({"args": args_dict(request), **fields, "headers": headers_dict(request.headers),
                   "method": request.method, "origin": origin(request), "url": url_of(request)})


def pick_status(raw: str) -> int | None:
    """`/status/<codes>`: one code, or a comma-separated list (`200,404`, with optional `:weight`) to pick from."""
    choices: list[tuple[int, float]] = []
    for item in raw.split(","):
        code_s, _, weight_s = item.partition(":")
        try:
            code = int(code_s)
            weight = float(weight_s) if weight_s else 1.0
        except ValueError:
            return None
        if not 100 <= code <= 599 or weight < 0:
            return None
        choices.append((code, weight))
    if not choices:
        return None
    if len(choices) == 1:
        return choices[0][0]
    codes, weights = zip(*choices, strict=True)
    picked: int = random.choices(codes, weights=weights)[0]
    return picked


async def status(request: web.Request) -> web.Response:
    """/status/<code>, any method: that status with an empty body (418: the teapot); bad codes: 400."""
    code = pick_status(request.match_info["codes"])
    if code is None:
        return web.Response(text="Invalid status code\n", status=400)
    resp = web.Response(status=code, text=_STATUS_BODY.get(code, "") if code not in (204, 304) else None)
    if 300 <= code < 400 and code != 304:
        resp.headers["Location"] = "/redirect/1"
    if code == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="Fake Realm"'
    return resp


async def delay(request: web.Request) -> web.Response:
    """/delay/<seconds>, any method: waits (at most 10 s, as httpbin.org), then answers like /anything."""
    try:
        seconds = float(request.match_info["seconds"])
    except ValueError:
        return web.Response(text="Invalid delay\n", status=400)
    await asyncio.sleep(min(max(seconds, 0.0), MAX_DELAY))
    fields = await body_fields(request)
    return pretty({"args": args_dict(request), **fields, "headers": headers_dict(request.headers),
                   "origin": origin(request), "url": url_of(request)})


async def index(request: web.Request) -> web.Response:
    """GET /: a short list of the endpoints."""
    names = ["/ip", "/headers", "/response-headers", "/user-agent", "/get", "/post", "/put", "/patch", "/delete",
             "/status/:code", "/delay/:n", "/anything"]
    return web.Response(text="httpbin (sailmesh sample): " + " ".join(names) + "\n")


def make_app() -> web.Application:
    """The httpbin application."""
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ip", ip)
    app.router.add_get("/headers", headers)
    app.router.add_get("/user-agent", user_agent)
    app.router.add_get("/response-headers", response_headers)
    app.router.add_get("/get", get)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        app.router.add_route(method, f"/{method.lower()}", with_body)
    app.router.add_route("*", "/anything", anything)
    app.router.add_route("*", "/anything/{tail:.*}", anything)
    app.router.add_route("*", "/status/{codes}", status)
    app.router.add_route("*", "/delay/{seconds}", delay)
    return app


if __name__ == "__main__":
    run(make_app, SERVICE)
