"""The four Bookinfo services as real processes wired directly (no mesh): pages, stars per reviews version, APIs.

Each check names the behaviour of Istio's original Bookinfo it reproduces."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import aiohttp
import pytest

from sailmesh.processes import free_port
from tests.e2e.test_bookinfo_harness import App, backend_env, running, running_sync

pytestmark = pytest.mark.e2e

REVIEW1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
REVIEW2 = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."
FULL_STAR = '<span class="glyphicon glyphicon-star"></span>'
EMPTY_STAR = '<span class="glyphicon glyphicon-star-empty"></span>'


@pytest.fixture(scope="module")
def bookinfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, App]]:
    """details, ratings, reviews v1/v2/v3 and one productpage per reviews version, all started at once."""
    logs: pathlib.Path = tmp_path_factory.mktemp("bookinfo")
    ports = {name: free_port() for name in ("details", "ratings", "reviews-v1", "reviews-v2", "reviews-v3")}
    ratings_env = {"RATINGS_HOSTNAME": "127.0.0.1", "RATINGS_SERVICE_PORT": str(ports["ratings"])}
    specs: dict[str, tuple[str, dict[str, str]]] = {
        "details": ("details", {"PORT": str(ports["details"])}),
        "ratings": ("ratings", {"PORT": str(ports["ratings"])}),
        "reviews-v1": ("reviews", {"SERVICE_VERSION": "v1", "HOSTNAME": "reviews-v1-0"}),
        "reviews-v2": ("reviews", {"SERVICE_VERSION": "v2", "HOSTNAME": "reviews-v2-0", "CLUSTER_NAME": "east"}),
        "reviews-v3": ("reviews", {"STARS": "red", "HOSTNAME": "reviews-v3-0"}),
    }
    for version in ("v1", "v2", "v3"):
        specs[f"reviews-{version}"][1].update(PORT=str(ports[f"reviews-{version}"]), **ratings_env)
        addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        env = backend_env(addr["details"], addr[f"reviews-{version}"], addr["ratings"])
        specs[f"productpage-{version}"] = ("productpage", env)
    with running_sync(logs, *specs.values()) as apps:
        yield dict(zip(specs, apps, strict=True))


async def fetch(url: str, **kwargs: object) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as client, client.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text(), resp


async def get_json(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        return resp.status, await resp.json()


def details_shown(page: str) -> None:
    """The original's details column: type, pages, publisher, language, both ISBNs."""
    assert "Book Details" in page
    for text in (
        "<dt>Type:</dt>paperback",
        "<dt>Pages:</dt>200",
        "<dt>Publisher:</dt>PublisherA",
        "<dt>Language:</dt>English",
        "<dt>ISBN-10:</dt>1234567890",
        "<dt>ISBN-13:</dt>123-1234567890",
    ):
        assert text in page


async def test_productpage_v1_details_and_reviews_without_stars(bookinfo: dict[str, App]) -> None:
    status, page, resp = await fetch(bookinfo["productpage-v1"].url + "/productpage")
    assert status == 200 and resp.content_type == "text/html"
    assert '<h3 class="text-center text-primary">The Comedy of Errors</h3>' in page
    details_shown(page)
    assert REVIEW1 in page and REVIEW2 in page and "<small>Reviewer1</small>" in page
    # reviews v1 does not call ratings: no stars at all.
    assert "glyphicon-star" not in page and "<font color" not in page
    assert "<u>reviews-v1-0</u>" in page and "on cluster" not in page  # clustername "null" is hidden


async def test_productpage_v2_black_stars(bookinfo: dict[str, App]) -> None:
    status, page, _ = await fetch(bookinfo["productpage-v2"].url + "/productpage")
    assert status == 200
    details_shown(page)
    # Reviewer1 5 stars, Reviewer2 4 stars + 1 empty, each review's stars inside <font color="black">.
    assert page.count('<font color="black">') == 2 and 'color="red"' not in page
    assert page.count(FULL_STAR) == 9 and page.count(EMPTY_STAR) == 1
    assert "on cluster <u>east</u>" in page


async def test_productpage_v3_red_stars(bookinfo: dict[str, App]) -> None:
    status, page, _ = await fetch(bookinfo["productpage-v3"].url + "/productpage")
    assert status == 200
    assert page.count('<font color="red">') == 2 and 'color="black"' not in page
    assert page.count(FULL_STAR) == 9 and page.count(EMPTY_STAR) == 1
    blocks = re.findall(r"<blockquote>.*?</blockquote>", page, re.S)
    assert [b.count(FULL_STAR) for b in blocks] == [5, 4]


async def test_reviews_json_per_version(bookinfo: dict[str, App]) -> None:
    """reviews/<id>: id as a string, podname from HOSTNAME, clustername "null" when unset, rating only in v2/v3."""
    status, v1 = await get_json(bookinfo["reviews-v1"].url + "/reviews/0")
    assert status == 200
    assert v1 == {
        "id": "0",
        "podname": "reviews-v1-0",
        "clustername": "null",
        "reviews": [{"reviewer": "Reviewer1", "text": REVIEW1}, {"reviewer": "Reviewer2", "text": REVIEW2}],
    }
    _, v2 = await get_json(bookinfo["reviews-v2"].url + "/reviews/7")
    assert isinstance(v2, dict) and v2["id"] == "7" and v2["clustername"] == "east"
    assert [r["rating"] for r in v2["reviews"]] == [{"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}]
    _, v3 = await get_json(bookinfo["reviews-v3"].url + "/reviews/0")
    assert isinstance(v3, dict)
    assert [r["rating"] for r in v3["reviews"]] == [{"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}]
    # JAX-RS int path parameter: anything else is not found.
    status, _, _ = await fetch(bookinfo["reviews-v2"].url + "/reviews/abc")
    assert status == 404


async def test_details_and_ratings_json(bookinfo: dict[str, App]) -> None:
    status, body = await get_json(bookinfo["details"].url + "/details/0")
    assert status == 200
    assert body == {
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
    assert await get_json(bookinfo["details"].url + "/details/abc") == (
        400,
        {"error": "please provide numeric product id"},
    )
    assert await get_json(bookinfo["ratings"].url + "/ratings/0") == (
        200,
        {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}},
    )
    assert await get_json(bookinfo["ratings"].url + "/ratings/abc") == (
        400,
        {"error": "please provide numeric product ID"},
    )
    for name, text in (
        ("details", "Details is healthy"),
        ("ratings", "Ratings is healthy"),
        ("reviews-v1", "Reviews is healthy"),
    ):
        assert await get_json(bookinfo[name].url + "/health") == (200, {"status": text})


async def test_ratings_post_is_kept_in_memory(bookinfo: dict[str, App]) -> None:
    url = bookinfo["ratings"].url + "/ratings/42"
    async with aiohttp.ClientSession() as client:
        async with client.post(url, json={"Reviewer1": 1, "Reviewer2": 2}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"id": 42, "ratings": {"Reviewer1": 1, "Reviewer2": 2}}
        async with client.post(url, data=b"{not json") as resp:
            assert resp.status == 400
    assert await get_json(url) == (200, {"id": 42, "ratings": {"Reviewer1": 1, "Reviewer2": 2}})
    assert await get_json(bookinfo["ratings"].url + "/ratings/43") == (
        200,
        {"id": 43, "ratings": {"Reviewer1": 5, "Reviewer2": 4}},
    )


async def test_productpage_api(bookinfo: dict[str, App]) -> None:
    base = bookinfo["productpage-v2"].url + "/api/v1/products"
    status, products = await get_json(base)
    assert status == 200 and isinstance(products, list) and len(products) == 1
    assert products[0]["id"] == 0 and products[0]["title"] == "The Comedy of Errors"
    assert "William Shakespeare's</b>" in products[0]["descriptionHtml"]
    status, details = await get_json(base + "/0")
    assert status == 200 and isinstance(details, dict) and details["ISBN-13"] == "123-1234567890"
    status, reviews = await get_json(base + "/0/reviews")
    assert status == 200 and isinstance(reviews, dict) and reviews["reviews"][0]["rating"]["color"] == "black"
    assert await get_json(base + "/0/ratings") == (200, {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    # details answers 400 for a non-numeric id: productpage passes the status on with its own error text.
    assert await get_json(base + "/abc") == (
        400,
        {"error": "Sorry, product details are currently unavailable for this book."},
    )


async def test_index_health_and_static(bookinfo: dict[str, App]) -> None:
    base = bookinfo["productpage-v1"].url
    status, page, _ = await fetch(base + "/")
    assert status == 200 and "simple bookstore application" in page
    assert '<a href="/productpage?u=normal">Normal user</a>' in page and "reviews" in page
    assert (await fetch(base + "/health"))[:2] == (200, "Product page is healthy")
    status, css, resp = await fetch(base + "/static/bookinfo.css")
    assert status == 200 and resp.content_type == "text/css" and "glyphicon-star" in css
    assert (await fetch(base + "/static/missing.css"))[0] == 404


async def test_ratings_v_faulty_fails_about_half(tmp_path: pathlib.Path) -> None:
    """The original's SERVICE_VERSION=v-faulty: each request fails with 503 with probability 1/2."""
    async with running(tmp_path, ("ratings", {"SERVICE_VERSION": "v-faulty"})) as (ratings,):
        statuses = []
        async with aiohttp.ClientSession() as client:
            for _ in range(60):
                async with client.get(ratings.url + "/ratings/0") as resp:
                    statuses.append(resp.status)
                    if resp.status == 503:
                        assert await resp.json() == {"error": "Service unavailable"}
    assert set(statuses) == {200, 503}  # all 60 equal has probability 2**-59
