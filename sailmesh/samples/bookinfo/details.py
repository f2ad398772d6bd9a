"""Bookinfo details v1: the book's details as JSON (Istio's Ruby details service)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from sailmesh.samples.bookinfo.common import run

SERVICE = "details"
_INTEGER = re.compile(r"^[+-]?\d+$")


def book_details(product_id: int) -> dict[str, Any]:
    """The fixed details document the original returns for any product id."""
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


async def details(request: web.Request) -> web.Response:
    """GET /details/<id>: the last path segment must be an integer, else 400 as the original."""
    last = request.path.rstrip("/").split("/")[-1]  # Ruby's req.path.split('/')[-1]; "/details" -> "details"
    if not _INTEGER.match(last):
        return web.json_response({"error": "please provide numeric product id"}, status=400)
    return web.json_response(book_details(int(last)))


async def health(request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"status": "Details is healthy"})


def make_app() -> web.Application:
    """The details application."""
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/details", details)
    app.router.add_get("/details/{tail:.*}", details)
    return app


if __name__ == "__main__":
    run(make_app, SERVICE)
