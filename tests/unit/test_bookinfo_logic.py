"""Bookinfo services' pure parts: env config, the session cookie, the reviews document, page markup, id parsing."""

from __future__ import annotations

import time

import pytest

from sailmesh.samples.bookinfo import pages
from sailmesh.samples.bookinfo.common import ConfigError, forward_headers, seconds
from sailmesh.samples.bookinfo.details import book_details
from sailmesh.samples.bookinfo.headers import PRODUCTPAGE_FORWARD, REVIEWS_FORWARD
from sailmesh.samples.bookinfo.productpage import PRODUCTS, ProductpageConfig, service_tree
from sailmesh.samples.bookinfo.ratings import UNAVAILABLE_PERIOD, UNHEALTHY_PERIOD, _unavailable, parse_product_id
from sailmesh.samples.bookinfo.reviews import RATINGS_UNAVAILABLE, ReviewsConfig, reviews_document
from sailmesh.samples.bookinfo.session import decode_session, encode_session


def test_productpage_config_defaults_match_original() -> None:
    """Service names details/reviews/ratings on port 9080; 3 s per call (productpage.py)."""
    config = ProductpageConfig.from_env({})
    assert config.details_url == "http://details:9080/details"
    assert config.reviews_url == "http://reviews:9080/reviews"
    assert config.ratings_url == "http://ratings:9080/ratings"
    assert config.timeout == 3.0


def test_productpage_config_from_env() -> None:
    env = {
        "SERVICES_DOMAIN": "default.svc.cluster.local",
        "DETAILS_HOSTNAME": "d",
        "DETAILS_SERVICE_PORT": "1",
        "REVIEWS_HOSTNAME": "r",
        "REVIEWS_SERVICE_PORT": "2",
        "BACKEND_TIMEOUT_SECONDS": "0.25",
    }
    config = ProductpageConfig.from_env(env)
    assert config.details_url == "http://d.default.svc.cluster.local:1/details"
    assert config.reviews_url == "http://r.default.svc.cluster.local:2/reviews"
    assert config.ratings_url == "http://ratings.default.svc.cluster.local:9080/ratings"
    assert config.timeout == 0.25
    tree = service_tree(config)
    assert [c["endpoint"] for c in tree["children"]] == ["details", "reviews"]
    assert tree["children"][1]["children"][0]["name"] == "http://ratings.default.svc.cluster.local:9080"


@pytest.mark.parametrize("raw", ["abc", "0", "-1"])
def test_bad_timeout_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        seconds(raw, "BACKEND_TIMEOUT_SECONDS", 3.0)


@pytest.mark.parametrize(
    ("env", "enabled", "color", "timeout"),
    [
        ({}, False, "black", 10.0),
        ({"SERVICE_VERSION": "v2"}, True, "black", 10.0),
        ({"SERVICE_VERSION": "v3"}, True, "red", 2.5),  # the original waits 2.5 s for ratings unless black
        ({"STARS": "none"}, False, "black", 10.0),
        ({"STARS": "red"}, True, "red", 2.5),
        ({"SERVICE_VERSION": "v1", "ENABLE_RATINGS": "TRUE", "STAR_COLOR": "green"}, True, "green", 2.5),
        ({"STARS": "black", "ENABLE_RATINGS": "yes"}, False, "black", 10.0),  # Java Boolean.valueOf: only "true"
        ({"SERVICE_VERSION": "v2", "RATINGS_TIMEOUT_SECONDS": "0.5"}, True, "black", 0.5),
    ],
)
def test_reviews_config(env: dict[str, str], enabled: bool, color: str, timeout: float) -> None:
    config = ReviewsConfig.from_env(env)
    assert (config.ratings_enabled, config.star_color, config.ratings_timeout) == (enabled, color, timeout)
    assert config.ratings_url == "http://ratings:9080/ratings"


def test_reviews_document_shapes() -> None:
    v1 = ReviewsConfig.from_env({"HOSTNAME": "reviews-v1-0"})
    doc = reviews_document(v1, 0, None)
    assert doc["id"] == "0" and doc["podname"] == "reviews-v1-0" and doc["clustername"] == "null"
    assert [set(r) for r in doc["reviews"]] == [{"reviewer", "text"}] * 2
    v3 = ReviewsConfig.from_env({"STARS": "red", "CLUSTER_NAME": "west"})
    doc = reviews_document(v3, 5, {"Reviewer1": 5, "Reviewer2": 4})
    assert doc["clustername"] == "west"
    assert [r["rating"] for r in doc["reviews"]] == [{"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}]
    failed = reviews_document(v3, 5, None)
    assert [r["rating"] for r in failed["reviews"]] == [{"error": RATINGS_UNAVAILABLE}] * 2
    partial = reviews_document(v3, 5, {"Reviewer2": 2})
    assert [r["rating"] for r in partial["reviews"]] == [{"error": RATINGS_UNAVAILABLE}, {"stars": 2, "color": "red"}]


def test_session_cookie_round_trip_and_tamper() -> None:
    value = encode_session("k1", "jason")
    assert decode_session("k1", value) == "jason"
    assert decode_session("k2", value) == ""  # another key
    payload, _, sig = value.partition(".")
    assert decode_session("k1", payload + "x." + sig) == ""
    for junk in (None, "", "no-dot", "a.b", "é.é", "...."):
        assert decode_session("k1", junk) == ""


def test_forward_headers_copies_only_listed_present_headers() -> None:
    incoming = {"x-request-id": "1", "x-b3-traceid": "t", "x-custom": "c"}
    assert forward_headers(incoming, PRODUCTPAGE_FORWARD) == {"x-request-id": "1", "x-b3-traceid": "t"}
    # productpage sets end-user from its session, reviews passes the incoming one on (for ratings routing).
    assert "end-user" not in PRODUCTPAGE_FORWARD and "end-user" in REVIEWS_FORWARD
    for name in (
        "x-request-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "b3",
        "traceparent",
        "tracestate",
        "x-ot-span-context",
        "x-datadog-trace-id",
        "user-agent",
        "cookie",
    ):
        assert name in PRODUCTPAGE_FORWARD and name in REVIEWS_FORWARD


@pytest.mark.parametrize(
    ("path", "pid"),
    [
        ("/ratings/0", 0),
        ("/ratings/12abc", 12),
        ("/ratings/ 7", 7),
        ("/ratings/-3", -3),
        ("/ratings/", None),
        ("/ratings/abc", None),
    ],
)
def test_ratings_product_id_parses_like_javascript_parseint(path: str, pid: int | None) -> None:
    assert parse_product_id(path) == pid


def test_details_document() -> None:
    assert list(book_details(3)) == [
        "id",
        "author",
        "year",
        "type",
        "pages",
        "publisher",
        "language",
        "ISBN-10",
        "ISBN-13",
    ]
    assert book_details(3)["id"] == 3


def test_product_page_markup() -> None:
    reviews = {
        "podname": "p<1>",
        "clustername": "null",
        "reviews": [
            {"reviewer": "R1", "text": "<script>x</script>", "rating": {"stars": 2, "color": "red"}},
            {"reviewer": "R2", "text": "t", "rating": {"error": RATINGS_UNAVAILABLE}},
        ],
    }
    html = pages.product_page(PRODUCTS[0], 200, book_details(0), 200, reviews, "a&b")
    assert html.count('<span class="glyphicon glyphicon-star"></span>') == 2
    assert html.count('<span class="glyphicon glyphicon-star-empty"></span>') == 3
    assert '<font color="red">' in html and f"<p><i>{RATINGS_UNAVAILABLE}</i></p>" in html
    assert "&lt;script&gt;" in html and "<script>" not in html and "p&lt;1&gt;" in html
    assert 'a&amp;b ( <a href="logout">sign out</a> )' in html
    assert "<b>William Shakespeare's</b>" in html  # descriptionHtml is trusted markup, as the original renders it
    errors = pages.product_page(PRODUCTS[0], 500, {"error": "E1"}, 503, {"error": "E2"}, "")
    assert "Error fetching product details!" in errors and "<p>E1</p>" in errors
    assert "Error fetching product reviews!" in errors and "<p>E2</p>" in errors
    assert 'action="login"' in errors and 'name="username"' in errors


def test_ratings_unavailable_versions_alternate() -> None:
    """v-unavailable flips every 60 s, v-unhealthy every 15 min, starting available (the original's timers)."""
    now = time.monotonic()
    assert not _unavailable({"version": "v-unavailable", "started": now})
    assert _unavailable({"version": "v-unavailable", "started": now - UNAVAILABLE_PERIOD * 1.5})
    assert not _unavailable({"version": "v-unavailable", "started": now - UNAVAILABLE_PERIOD * 2.5})
    assert _unavailable({"version": "v-unhealthy", "started": now - UNHEALTHY_PERIOD * 1.1})
    assert not _unavailable({"version": "v1", "started": now - UNAVAILABLE_PERIOD * 1.5})
