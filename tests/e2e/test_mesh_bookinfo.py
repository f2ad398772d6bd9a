"""Bookinfo through the embedded mesh: real Envoy sidecars + gateway, Istio's own routing YAMLs unchanged."""

from __future__ import annotations

import collections
import json
import time
import urllib.parse
import urllib.request

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.conftest import CONFORMANCE

BOOKINFO = CONFORMANCE / "bookinfo"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with NO_PROXY.open(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def reviews_version(mesh: RunningMesh, headers: dict[str, str] | None = None) -> str:
    """v1 (no ratings), v2 (black stars) or v3 (red stars), read from productpage's reviews API."""
    status, body = get(mesh.gateway_url() + "/api/v1/products/0/reviews", headers)
    assert status == 200, body
    reviews = json.loads(body)["reviews"]
    rating = reviews[0].get("rating")
    if not rating:
        return "v1"
    return {"black": "v2", "red": "v3"}[rating["color"]]


def versions(mesh: RunningMesh, n: int, headers: dict[str, str] | None = None) -> collections.Counter[str]:
    return collections.Counter(reviews_version(mesh, headers) for _ in range(n))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> RunningMesh:
    if not BOOKINFO.is_dir():
        pytest.skip(f"Istio's Bookinfo YAMLs not found at {BOOKINFO} (needs ../shared)")
    m = RunningMesh(str(tmp_path_factory.mktemp("bookinfo-mesh")), demo=True, extra=["--no-routing"])
    yield m
    m.stop()


def apply(mesh: RunningMesh, name: str) -> None:
    mesh.cli("apply", "-f", str(BOOKINFO / name), check=True)


def test_bookinfo_with_istio_yamls(mesh: RunningMesh) -> None:
    # No Gateway yet: the ingress gateway has no listener on 8080 (Istio builds listeners from Gateways).
    with pytest.raises(OSError):
        get(mesh.gateway_url() + "/productpage", timeout=3)

    # Istio's bookinfo-gateway.yaml, unchanged, exposes /productpage on the gateway's port 8080.
    apply(mesh, "bookinfo-gateway.yaml")
    _, page = wait_for(lambda: (r := get(mesh.gateway_url() + "/productpage")) and r[0] == 200 and r,
                            timeout=15, what="productpage through the gateway")
    assert "Book Details" in page and "Book Reviews" in page
    assert "Sorry, product details are currently unavailable" not in page

    # Without routing rules, reviews is load-balanced over v1, v2 and v3.
    seen = wait_for(lambda: (c := versions(mesh, 30)) and len(c) == 3 and c, timeout=20, what="all three versions")
    assert set(seen) == {"v1", "v2", "v3"}

    # destination-rule-all.yaml then virtual-service-all-v1.yaml pin every service to v1.
    apply(mesh, "destination-rule-all.yaml")
    apply(mesh, "virtual-service-all-v1.yaml")
    wait_for(lambda: versions(mesh, 10) == {"v1": 10}, timeout=15, what="all traffic on reviews v1")
    assert versions(mesh, 40) == {"v1": 40}

    # virtual-service-reviews-test-v2.yaml: user jason (end-user header set by productpage) goes to v2.
    apply(mesh, "virtual-service-reviews-test-v2.yaml")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "jason", "passwd": "x"}).encode()
    opener.open(urllib.request.Request(mesh.gateway_url() + "/login", data=form), timeout=10).read()

    def jason_version() -> str:
        with opener.open(mesh.gateway_url() + "/api/v1/products/0/reviews", timeout=10) as r:
            rating = json.loads(r.read())["reviews"][0].get("rating")
        return "v2" if rating and rating["color"] == "black" else "other"

    wait_for(lambda: jason_version() == "v2", timeout=15, what="jason routed to reviews v2")
    assert all(jason_version() == "v2" for _ in range(10))
    assert versions(mesh, 10) == {"v1": 10}  # everybody else still on v1

    # virtual-service-reviews-90-10.yaml: about 90 % v1, 10 % v2.
    apply(mesh, "virtual-service-reviews-90-10.yaml")
    wait_for(lambda: "v2" in versions(mesh, 40), timeout=15, what="some traffic on v2")
    counts = versions(mesh, 300)
    assert set(counts) <= {"v1", "v2"}
    share_v2 = counts["v2"] / 300
    assert 0.04 <= share_v2 <= 0.18, counts  # 10 % expected; binomial 300 draws, generous band


def test_fault_injection_task(mesh: RunningMesh) -> None:
    """Istio's fault-injection task with its own YAMLs: jason is on reviews v2; an abort on ratings shows
    the ratings error, a 7 s delay makes productpage give up on reviews after its 3 s timeout + one retry."""
    for name in ("bookinfo-gateway.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml",
                 "virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-abort.yaml"):
        apply(mesh, name)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "jason", "passwd": "x"}).encode()
    wait_for(lambda: opener.open(urllib.request.Request(mesh.gateway_url() + "/login", data=form),
                                 timeout=10).status == 200, timeout=15, what="login through the gateway")

    def page() -> str:
        with opener.open(mesh.gateway_url() + "/productpage", timeout=30) as r:
            return r.read().decode()

    wait_for(lambda: "Ratings service is currently unavailable" in page(), timeout=15, what="abort on ratings")
    assert "Ratings service is currently unavailable" not in get(mesh.gateway_url() + "/productpage")[1]

    apply(mesh, "virtual-service-ratings-test-delay.yaml")
    wait_for(lambda: "Sorry, product reviews are currently unavailable" in page(), timeout=30,
             what="productpage timing out on reviews")
    start = time.monotonic()
    body = page()
    took = time.monotonic() - start
    assert "Sorry, product reviews are currently unavailable for this book." in body
    assert 5.5 <= took < 9, took  # Istio's task: about 6 s (3 s timeout, one retry)


def test_mtls_destination_rules_and_reviews_subsets(mesh: RunningMesh) -> None:
    """destination-rule-all-mtls.yaml (every service's subsets with ISTIO_MUTUAL, Istio's "mutual TLS" variant of
    the request-routing set-up) serves the same outcomes as destination-rule-all.yaml, over mTLS; then
    destination-rule-reviews.yaml (reviews' subsets, RANDOM load balancing) with virtual-service-reviews-v3.yaml
    sends everything to v3 (red stars)."""
    for name in ("bookinfo-gateway.yaml", "destination-rule-all-mtls.yaml", "virtual-service-all-v1.yaml"):
        apply(mesh, name)
    wait_for(lambda: versions(mesh, 10) == {"v1": 10}, timeout=30, what="all traffic on reviews v1 (mTLS rules)")
    status, page = get(mesh.gateway_url() + "/productpage")
    assert status == 200 and "Book Details" in page
    assert "Sorry, product details are currently unavailable" not in page
    stats = NO_PROXY.open(f"http://{mesh.gateway_ip}:15000/stats?filter=productpage.*ssl.handshake",
                          timeout=5).read().decode()
    handshakes = [int(v) for line in stats.splitlines() if (v := line.rpartition(": ")[2]).isdigit()]
    assert sum(handshakes) > 0, stats  # the gateway reached productpage over mTLS (bookinfo-gateway: no subset)
    apply(mesh, "destination-rule-reviews.yaml")
    apply(mesh, "virtual-service-reviews-v3.yaml")
    wait_for(lambda: versions(mesh, 10) == {"v3": 10}, timeout=30, what="all traffic on reviews v3")
    assert versions(mesh, 20) == {"v3": 20}
