"""Bookinfo ratings v1: reviewers' star ratings as JSON, in memory (Istio's Node.js ratings service)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from typing import Any

from aiohttp import web

from sailmesh.samples.bookinfo.common import run

SERVICE = "ratings"
DEFAULT_RATINGS = {"Reviewer1": 5, "Reviewer2": 4}
_JS_INT = re.compile(r"^\s*([+-]?\d+)")
# The original's failure-injection versions (SERVICE_VERSION): half the requests fail or wait 7 s,
# or the service flips between available and unavailable (every 60 s) / unhealthy (every 15 min).
DELAY_SECONDS = 7.0
UNAVAILABLE_PERIOD = 60.0
UNHEALTHY_PERIOD = 900.0

STATE = web.AppKey("ratings_state", dict)


def parse_product_id(path: str) -> int | None:
    """JavaScript parseInt of the last path segment, as the original does (None for NaN)."""
    m = _JS_INT.match(path.split("/")[-1])
    return int(m.group(1)) if m else None


def local_ratings(store: dict[int, dict[str, Any]], product_id: int) -> dict[str, Any]:
    """Posted ratings for the product, else the built-in ones."""
    return store.get(product_id) or {"id": product_id, "ratings": dict(DEFAULT_RATINGS)}


def _flipped(started: float, period: float) -> bool:
    return int((time.monotonic() - started) // period) % 2 == 1


def _unavailable(state: dict[str, Any]) -> bool:
    version = state["version"]
    if version == "v-unavailable":
        return _flipped(state["started"], UNAVAILABLE_PERIOD)
    if version == "v-unhealthy":
        return _flipped(state["started"], UNHEALTHY_PERIOD)
    return False


async def get_ratings(request: web.Request) -> web.Response:
    """GET /ratings/<id>."""
    state = request.app[STATE]
    product_id = parse_product_id(request.path)
    if product_id is None:
        return web.json_response({"error": "please provide numeric product ID"}, status=400)
    version = state["version"]
    if version == "v-faulty" and random.random() <= 0.5:
        return web.json_response({"error": "Service unavailable"}, status=503)
    if version == "v-delayed" and random.random() <= 0.5:
        await asyncio.sleep(DELAY_SECONDS)
    if _unavailable(state):
        return web.json_response({"error": "Service unavailable"}, status=503)
    return web.json_response(local_ratings(state["store"], product_id))


async def post_ratings(request: web.Request) -> web.Response:
    """POST /ratings/<id> with a JSON object of reviewer -> stars: kept in memory."""
    state = request.app[STATE]
    product_id = parse_product_id(request.path)
    if product_id is None:
        return web.json_response({"error": "please provide numeric product ID"}, status=400)
    try:
        ratings = json.loads(await request.text())
    except ValueError:
        return web.json_response({"error": "please provide valid ratings JSON"}, status=400)
    state["store"][product_id] = {"id": product_id, "ratings": ratings}
    return web.json_response(local_ratings(state["store"], product_id))


async def health(request: web.Request) -> web.Response:
    """GET /health (fails half the time for v-unhealthy, as the original)."""
    state = request.app[STATE]
    if state["version"] == "v-unhealthy" and _flipped(state["started"], UNHEALTHY_PERIOD):
        return web.json_response({"status": "Ratings is not healthy"}, status=500)
    return web.json_response({"status": "Ratings is healthy"})


def make_app() -> web.Application:
    """The ratings application (SERVICE_VERSION: v1 default, v-faulty, v-delayed, v-unavailable, v-unhealthy)."""
    app = web.Application()
    app[STATE] = {"version": os.environ.get("SERVICE_VERSION", "v1"), "store": {}, "started": time.monotonic()}
    app.router.add_get("/health", health)
    app.router.add_get("/ratings/{tail:.*}", get_ratings)
    app.router.add_post("/ratings/{tail:.*}", post_ratings)
    return app


if __name__ == "__main__":
    run(make_app, SERVICE)
