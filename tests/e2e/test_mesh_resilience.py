"""Under steady traffic: config on disk reaches every sidecar, bad config changes nothing, and a
control-plane crash and restart fails no request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.cli.demo import BOOKINFO
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

REVIEWS_V3 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""

INVALID_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -1
"""


class Traffic:
    """A background client sending requests through the gateway and recording every failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.colors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with NO_PROXY.open(self.url, timeout=10) as r:
                    body = json.loads(r.read())
                rating = body["reviews"][0].get("rating")
                self.colors.append(rating["color"] if rating else "none")
                self.ok += 1
            except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
                self.failures.append(repr(e))
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningMesh, str]]:
    config = str(tmp_path_factory.mktemp("mesh-config"))
    shutil.copytree(os.path.join(BOOKINFO, "mesh"), os.path.join(config, "mesh"))
    shutil.copytree(os.path.join(BOOKINFO, "networking"), os.path.join(config, "networking"))
    m = RunningMesh(str(tmp_path_factory.mktemp("mesh-state")), dirs=[config])
    yield m, config
    m.stop()


def proxy_admins(mesh: RunningMesh, roles: tuple[str, ...] = ("agent",)) -> list[str]:
    """Envoy admin URLs of the sidecars (role agent) and/or the gateway."""
    with open(os.path.join(mesh.state_dir, "mesh.json"), encoding="utf-8") as fh:
        state = json.load(fh)
    return [f"http://{p['address']}:15000" for p in state["processes"] if p["role"] in roles]


def route_dump(admin: str) -> str:
    with NO_PROXY.open(admin + "/config_dump?resource=dynamic_route_configs", timeout=5) as r:
        return r.read().decode()


def test_route_change_on_disk_reaches_every_sidecar(mesh: tuple[RunningMesh, str]) -> None:
    m, config = mesh
    url = m.gateway_url() + "/api/v1/products/0/reviews"
    wait_for(lambda: NO_PROXY.open(url, timeout=5).status == 200, timeout=20, what="bookinfo answering")
    with Traffic(url) as traffic:
        with open(os.path.join(config, "reviews-v3.yaml"), "w", encoding="utf-8") as fh:
            fh.write(REVIEWS_V3)
        # every sidecar holds the new route (a VirtualService without `gateways` binds to the mesh only, not to
        # the ingress gateway: Istio's rule); the deadline is generous, bench/ measures the speed
        for admin in proxy_admins(m):
            wait_for(lambda a=admin: "outbound|9080|v3|reviews.default.svc.cluster.local" in route_dump(a),
                     timeout=30, what=f"v3 route in {admin}")
        wait_for(lambda: traffic.colors[-5:] == ["red"] * 5, timeout=30, what="traffic on reviews v3")
    assert traffic.failures == []


def test_invalid_config_under_traffic_changes_nothing(mesh: tuple[RunningMesh, str]) -> None:
    m, config = mesh
    url = m.gateway_url() + "/api/v1/products/0/reviews"
    path = os.path.join(config, "reviews-v3.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(REVIEWS_V3)
    with Traffic(url) as traffic:
        wait_for(lambda: traffic.colors[-5:] == ["red"] * 5, timeout=15, what="traffic on reviews v3")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(INVALID_REVIEWS)
        # the control plane reports the rejection (file and field) and keeps the last valid version
        def rejected() -> list[str]:
            with NO_PROXY.open(urllib.request.Request(m.api_url + "/api/v1/rejected", headers=m.api_headers),
                               timeout=5) as r:
                return [x for x in json.loads(r.read())["rejected"] if "weight" in x]
        found = wait_for(rejected, timeout=30, what="the rejection to be reported")
        assert "reviews-v3.yaml" in found[0] and "VirtualService default/reviews" in found[0]
        start = traffic.ok
        wait_for(lambda: traffic.ok > start + 20, timeout=20, what="more traffic")
        # sailmesh apply of the same invalid resource is refused and names the field
        r = m.cli("apply", "-f", path)
        assert r.returncode != 0 and "weight" in r.stderr
    assert traffic.failures == []
    assert set(traffic.colors[-20:]) == {"red"}  # still the last valid route (v3)


def test_controlplane_crash_and_restart_fails_no_request(mesh: tuple[RunningMesh, str]) -> None:
    m, _ = mesh
    url = m.gateway_url() + "/api/v1/products/0/reviews"
    with open(os.path.join(m.state_dir, "mesh.json"), encoding="utf-8") as fh:
        cp_pid = next(p["pid"] for p in json.load(fh)["processes"] if p["role"] == "controlplane")
    with Traffic(url) as traffic:
        wait_for(lambda: traffic.ok > 5, timeout=30, what="traffic flowing")
        os.kill(cp_pid, signal.SIGKILL)

        def reconnected() -> bool:
            with NO_PROXY.open(urllib.request.Request(m.api_url + "/debug/syncz", headers=m.api_headers),
                               timeout=5) as r:
                proxies = json.loads(r.read())
            return len(proxies) == len(proxy_admins(m, ("agent", "gateway"))) and all(
                t.get("acked") == t.get("sent") for p in proxies for t in p["types"].values())
        wait_for(reconnected, timeout=60, interval=0.2, what="every proxy reconnected and in sync")
        start = traffic.ok
        wait_for(lambda: traffic.ok > start + 20, timeout=20, what="traffic after the restart")
    assert traffic.failures == []
