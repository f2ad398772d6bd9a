"""Bookinfo productpage v1: the web page and product API, calling details and reviews (Istio's Python productpage)."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from sailmesh.samples.bookinfo import pages
from sailmesh.samples.bookinfo.common import ConfigError, client_session, forward_headers, run, seconds, service_url
from sailmesh.samples.bookinfo.headers import PRODUCTPAGE_FORWARD
from sailmesh.samples.bookinfo.session import COOKIE_NAME, DEFAULT_SECRET, decode_session, encode_session

SERVICE = "productpage"
log = logging.getLogger(SERVICE)
STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"

DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."

PRODUCTS: tuple[dict[str, Any], ...] = (
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
        "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his "
        "most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in "
        "addition to puns and word play.",
    },
)

CLIENT = web.AppKey("productpage_client", aiohttp.ClientSession)


@dataclass(frozen=True)
class ProductpageConfig:
    """Backend URLs, the per-call timeout and the session secret, from the environment."""

    details_url: str
    reviews_url: str
    ratings_url: str
    timeout: float
    secret: str
    flood_factor: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProductpageConfig:
        """DETAILS/REVIEWS/RATINGS_HOSTNAME and _SERVICE_PORT, SERVICES_DOMAIN as the original; timeout 3 s."""
        e = os.environ if env is None else env
        return cls(
            details_url=service_url("DETAILS_HOSTNAME", "details", "DETAILS_SERVICE_PORT", e) + "/details",
            reviews_url=service_url("REVIEWS_HOSTNAME", "reviews", "REVIEWS_SERVICE_PORT", e) + "/reviews",
            ratings_url=service_url("RATINGS_HOSTNAME", "ratings", "RATINGS_SERVICE_PORT", e) + "/ratings",
            timeout=seconds(e.get("BACKEND_TIMEOUT_SECONDS"), "BACKEND_TIMEOUT_SECONDS", 3.0),
            secret=e.get("SESSION_SECRET") or DEFAULT_SECRET,
            flood_factor=_count(e.get("FLOOD_FACTOR")),
        )


def _count(raw: str | None) -> int:
    try:
        value = int(raw or 0)
    except ValueError as e:
        raise ConfigError(f"FLOOD_FACTOR={raw!r} is not an integer") from e
    if value < 0:
        raise ConfigError(f"FLOOD_FACTOR={raw!r} must not be negative")
    return value


CONFIG = web.AppKey("productpage_config", ProductpageConfig)


def service_tree(config: ProductpageConfig) -> dict[str, Any]:
    """The call graph shown on the index page (the original's service_dict['productpage'])."""

    def node(url: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        base, _, endpoint = url.rpartition("/")
        return {"name": base, "endpoint": endpoint, "children": children}

    ratings = node(config.ratings_url, [])
    details = node(config.details_url, [])
    reviews = node(config.reviews_url, [ratings])
    return {"name": details["name"], "endpoint": "details", "children": [details, reviews]}


async def call_backend(request: web.Request, url: str, attempts: int, error: str) -> tuple[int, dict[str, Any]]:
    """GET url with the forwarded headers, up to attempts times; (200, body) or (last status or 500, error)."""
    config = request.app[CONFIG]
    headers = outbound_headers(request)
    status = 500
    for _ in range(attempts):
        try:
            async with request.app[CLIENT].get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=config.timeout)
            ) as resp:
                status = resp.status
                if resp.status == 200:
                    body = await resp.json(content_type=None)
                    if isinstance(body, dict):
                        return 200, body
                    status = 500
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("request to %s failed: %r", url, e)
            status = 500
    return status, {"error": error}


def current_user(request: web.Request) -> str:
    """The signed-in user from the session cookie ("" when signed out)."""
    config = request.app[CONFIG]
    return decode_session(config.secret, request.cookies.get(COOKIE_NAME))


def outbound_headers(request: web.Request) -> dict[str, str]:
    """Trace and context headers to forward, plus end-user once signed in (as the original)."""
    headers = forward_headers(request.headers, PRODUCTPAGE_FORWARD)
    user = current_user(request)
    if user:
        headers["end-user"] = user
    return headers


def _id(request: web.Request) -> str:
    return quote(request.match_info["product_id"], safe="")


async def get_details(request: web.Request, product_id: str) -> tuple[int, dict[str, Any]]:
    """details/<id>: one attempt."""
    config = request.app[CONFIG]
    return await call_backend(request, f"{config.details_url}/{product_id}", 1, DETAILS_ERROR)


async def get_reviews(request: web.Request, product_id: str) -> tuple[int, dict[str, Any]]:
    """reviews/<id>: two attempts (the original's deliberate 3 s timeout + one retry, used by Istio's fault task)."""
    config = request.app[CONFIG]
    return await call_backend(request, f"{config.reviews_url}/{product_id}", 2, REVIEWS_ERROR)


async def get_ratings(request: web.Request, product_id: str) -> tuple[int, dict[str, Any]]:
    """ratings/<id>: one attempt."""
    config = request.app[CONFIG]
    return await call_backend(request, f"{config.ratings_url}/{product_id}", 1, RATINGS_ERROR)


async def index(request: web.Request) -> web.Response:
    """GET /."""
    config = request.app[CONFIG]
    return web.Response(text=pages.index_page(service_tree(config)), content_type="text/html")


async def health(request: web.Request) -> web.Response:
    """GET /health."""
    return web.Response(text="Product page is healthy", content_type="text/html")


async def productpage(request: web.Request) -> web.Response:
    """GET /productpage: product 0 with its details and reviews; always 200, errors shown in the page."""
    details_status, details = await get_details(request, "0")
    config = request.app[CONFIG]
    if config.flood_factor:
        # The original's load generator: FLOOD_FACTOR extra reviews calls in parallel, answers ignored.
        url = f"{config.reviews_url}/0"
        await asyncio.gather(*(call_backend(request, url, 1, REVIEWS_ERROR) for _ in range(config.flood_factor)))
    reviews_status, reviews = await get_reviews(request, "0")
    html = pages.product_page(PRODUCTS[0], details_status, details, reviews_status, reviews, current_user(request))
    return web.Response(text=html, content_type="text/html")


def _back(request: web.Request) -> str:
    """Where the original redirects after login/logout: the referrer (kept on this host), else /productpage."""
    referer = urlsplit(request.headers.get("Referer", ""))
    if referer.path.startswith("/"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/productpage"


async def login(request: web.Request) -> web.Response:
    """POST /login with form field username: sign in (session cookie) and go back."""
    config = request.app[CONFIG]
    form = await request.post()
    username = str(form.get("username") or request.query.get("username") or "")
    resp = web.HTTPFound(_back(request))
    if username:
        resp.set_cookie(COOKIE_NAME, encode_session(config.secret, username), httponly=True, path="/")
    else:
        resp.del_cookie(COOKIE_NAME, path="/")
    return resp


async def logout(request: web.Request) -> web.Response:
    """GET /logout: forget the user and go back."""
    resp = web.HTTPFound(_back(request))
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


async def api_products(request: web.Request) -> web.Response:
    """GET /api/v1/products."""
    return web.json_response(list(PRODUCTS))


async def api_product(request: web.Request) -> web.Response:
    """GET /api/v1/products/<id>: the details service's answer, with its status."""
    status, body = await get_details(request, _id(request))
    return web.json_response(body, status=status)


async def api_reviews(request: web.Request) -> web.Response:
    """GET /api/v1/products/<id>/reviews."""
    status, body = await get_reviews(request, _id(request))
    return web.json_response(body, status=status)


async def api_ratings(request: web.Request) -> web.Response:
    """GET /api/v1/products/<id>/ratings."""
    status, body = await get_ratings(request, _id(request))
    return web.json_response(body, status=status)


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    async with client_session() as client:
        app[CLIENT] = client
        yield


def make_app(config: ProductpageConfig | None = None) -> web.Application:
    """The productpage application."""
    app = web.Application()
    app[CONFIG] = config or ProductpageConfig.from_env()
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/health", health)
    app.router.add_get("/productpage", productpage)
    app.router.add_post("/login", login)
    app.router.add_get("/logout", logout)
    app.router.add_get("/api/v1/products", api_products)
    app.router.add_get("/api/v1/products/{product_id}", api_product)
    app.router.add_get("/api/v1/products/{product_id}/reviews", api_reviews)
    app.router.add_get("/api/v1/products/{product_id}/ratings", api_ratings)
    app.router.add_static("/static", STATIC_DIR)
    return app


if __name__ == "__main__":
    run(make_app, SERVICE)
