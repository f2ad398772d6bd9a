"""Bookinfo reviews v1/v2/v3: two book reviews, with star ratings from the ratings service in v2/v3 (Istio's Java)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sailmesh.samples.bookinfo.common import client_session, forward_headers, run, seconds, service_url
from sailmesh.samples.bookinfo.headers import REVIEWS_FORWARD

SERVICE = "reviews"
log = logging.getLogger(SERVICE)

REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
)
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
# The original images' build arguments per version: v1 no ratings, v2 black stars, v3 red stars.
VERSIONS = {"v1": (False, "black"), "v2": (True, "black"), "v3": (True, "red")}
STARS = {"none": (False, "black"), "black": (True, "black"), "red": (True, "red")}

CLIENT = web.AppKey("reviews_client", aiohttp.ClientSession)


@dataclass(frozen=True)
class ReviewsConfig:
    """What this reviews instance does, from its environment."""

    ratings_enabled: bool
    star_color: str
    ratings_url: str
    ratings_timeout: float
    podname: str
    clustername: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReviewsConfig:
        """SERVICE_VERSION (v1|v2|v3) or STARS (none|black|red) pick defaults; ENABLE_RATINGS/STAR_COLOR win."""
        e = os.environ if env is None else env
        enabled, color = VERSIONS.get(e.get("SERVICE_VERSION") or "v1", VERSIONS["v1"])
        if e.get("STARS"):
            enabled, color = STARS.get(str(e.get("STARS")).lower(), STARS["none"])
        if e.get("ENABLE_RATINGS"):
            enabled = str(e.get("ENABLE_RATINGS")).lower() == "true"  # Java's Boolean.valueOf
        color = e.get("STAR_COLOR") or color
        # The original waits 10 s for ratings with black stars, 2.5 s with any other colour.
        default_timeout = 10.0 if color == "black" else 2.5
        timeout = seconds(e.get("RATINGS_TIMEOUT_SECONDS"), "RATINGS_TIMEOUT_SECONDS", default_timeout)
        return cls(
            ratings_enabled=enabled,
            star_color=color,
            ratings_url=service_url("RATINGS_HOSTNAME", "ratings", "RATINGS_SERVICE_PORT", e) + "/ratings",
            ratings_timeout=timeout,
            podname=e.get("HOSTNAME") or e.get("POD_NAME") or socket.gethostname(),
            clustername=e.get("CLUSTER_NAME") or "null",  # Java prints a missing value as "null"
        )


CONFIG = web.AppKey("reviews_config", ReviewsConfig)


def reviews_document(config: ReviewsConfig, product_id: int, stars: Mapping[str, int] | None) -> dict[str, Any]:
    """The reviews JSON; stars is None when ratings could not be fetched (then each review carries the error)."""
    entries: list[dict[str, Any]] = []
    for reviewer, text in REVIEWS:
        entry: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if config.ratings_enabled:
            count = (stars or {}).get(reviewer)
            if isinstance(count, int) and not isinstance(count, bool):
                entry["rating"] = {"stars": count, "color": config.star_color}
            else:
                entry["rating"] = {"error": RATINGS_UNAVAILABLE}
        entries.append(entry)
    return {"id": str(product_id), "podname": config.podname, "clustername": config.clustername, "reviews": entries}


async def fetch_ratings(
    client: aiohttp.ClientSession, config: ReviewsConfig, product_id: int, headers: Mapping[str, str]
) -> Mapping[str, int] | None:
    """GET ratings/<id> once with the version's timeout; None on any failure (logged)."""
    url = f"{config.ratings_url}/{product_id}"
    try:
        async with client.get(
            url, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=config.ratings_timeout)
        ) as resp:
            if resp.status != 200:
                log.warning("unable to contact %s: got status %s", url, resp.status)
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.warning("unable to contact %s: %r", url, e)
        return None
    ratings = body.get("ratings") if isinstance(body, dict) else None
    return ratings if isinstance(ratings, dict) else {}


async def reviews(request: web.Request) -> web.Response:
    """GET /reviews/<id>."""
    config = request.app[CONFIG]
    product_id = int(request.match_info["product_id"])
    stars = None
    if config.ratings_enabled:
        headers = forward_headers(request.headers, REVIEWS_FORWARD)
        stars = await fetch_ratings(request.app[CLIENT], config, product_id, headers)
    return web.json_response(reviews_document(config, product_id, stars))


async def health(request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"status": "Reviews is healthy"})


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    async with client_session() as client:
        app[CLIENT] = client
        yield


def make_app(config: ReviewsConfig | None = None) -> web.Application:
    """The reviews application."""
    app = web.Application()
    app[CONFIG] = config or ReviewsConfig.from_env()
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("/health", health)
    app.router.add_get(r"/reviews/{product_id:[+-]?\d+}", reviews)
    return app


if __name__ == "__main__":
    run(make_app, SERVICE)
