"""sailmesh's RateLimit API through real Envoy on Bookinfo: a rule's bucket empties into 429s (or the configured
status and headers), a header key gives each value its own bucket, and requests matching no rule pass."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.cli.demo import BOOKINFO
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

RATE_LIMIT = """\
apiVersion: policy.sailmesh.io/v1alpha1
kind: RateLimit
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  rules:
  - name: page
    match: {uri: {exact: /productpage}}
    limit: {requests: 3, per: 1h}
  - name: per-user
    match: {uri: {prefix: /api/v1/products}}
    limit: {requests: 2, per: 1h}
    key: {header: x-user}
  response:
    headers: {x-rate-limited: "true"}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = str(tmp_path_factory.mktemp("mesh-config"))
    shutil.copytree(os.path.join(BOOKINFO, "mesh"), os.path.join(config, "mesh"))
    shutil.copytree(os.path.join(BOOKINFO, "networking"), os.path.join(config, "networking"))
    m = RunningMesh(str(tmp_path_factory.mktemp("mesh-state")), dirs=[config])
    yield m
    m.stop()


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with NO_PROXY.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def _admin_stats(mesh: RunningMesh, stats: str, proxy: str = "productpage-v1-0.default") -> dict[str, int]:
    """The proxy's Envoy admin counters and gauges whose names match the regex `stats`."""
    with open(os.path.join(mesh.state_dir, "proxies", proxy, "envoy-bootstrap.json"), encoding="utf-8") as fh:
        admin = json.load(fh)["admin"]["address"]["socket_address"]
    url = f"http://{admin['address']}:{admin['port_value']}/stats?filter={stats}"
    with NO_PROXY.open(url, timeout=10) as r:
        return {name: int(value) for name, _, value in (line.partition(": ") for line in r.read().decode().splitlines())
                if value.isdigit()}


def listener_updates(mesh: RunningMesh) -> int:
    """How often the proxy's Envoy added or modified a listener (its admin stats)."""
    return sum(_admin_stats(mesh, "listener_manager.listener_(added|modified)$").values())


def listeners_settled(mesh: RunningMesh) -> bool:
    """No listener of the proxy is warming or draining, nor any replaced filter chain: the listeners Envoy accepted
    are the ones new connections reach. (Envoy counts an update when it accepts it, and serves it once warm: an
    update counted before a round can still reach the round's requests, with new buckets.)"""
    got = _admin_stats(mesh, "listener_manager.total_(listeners_warming|listeners_draining|filter_chains_draining)$")
    return len(got) == 3 and not any(got.values())


def test_rate_limit_rules_buckets_and_keys(mesh: RunningMesh, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = mesh.gateway_url()
    wait_for(lambda: get(base + "/productpage")[0] == 200, timeout=30, what="productpage answering")
    path = tmp_path / "ratelimit.yaml"
    path.write_text(RATE_LIMIT)
    r = mesh.cli("apply", "-f", str(path))
    assert r.returncode == 0 and "RateLimit default/productpage created" in r.stdout, r.stdout + r.stderr
    assert "accepted, not enforced" not in r.stderr

    # the page rule: 3 per hour, then Envoy's 429 with the configured header. A bucket lives in its listener: when
    # the productpage proxy's listeners are updated meanwhile (a mesh still converging after its start under
    # load), Envoy starts a new bucket, so a round that saw such an update is run again (at most 5 rounds). A round
    # starts once the proxy's listeners are settled, so an update accepted before it is already in force (CI and a
    # local run under load: alice 200, 200, 200, 429 with no update counted during the round)
    wait_for(lambda: get(base + "/productpage")[0] == 429, timeout=30, interval=0.2, what="the page rule in force")
    for _round in range(5):
        wait_for(lambda: listeners_settled(mesh), timeout=60, interval=0.2, what="productpage's listeners settled")
        before = listener_updates(mesh)
        got = wait_for(lambda: (lambda s: s if s[0] == 429 else None)(get(base + "/productpage")), timeout=30,
                       interval=0.2, what="the page rule's bucket to empty")
        assert got[1].get("x-rate-limited") == "true" and got[2] == "local_rate_limited"
        page = [get(base + "/productpage")[0] for _ in range(3)]
        # the per-user rule: each x-user value has its own bucket of 2; no rule matches /static, which passes
        api = base + "/api/v1/products"
        alice = [get(api, **{"x-user": f"alice-{_round}"})[0] for _ in range(3)]
        bob = [get(api, **{"x-user": f"bob-{_round}"})[0] for _ in range(3)]
        alice.append(get(api, **{"x-user": f"alice-{_round}"})[0])
        if listener_updates(mesh) == before:
            break
    assert page == [429] * 3
    assert alice == [200, 200, 429, 429] and bob == [200, 200, 429]
    assert get(base + "/static/bookinfo.css")[0] == 200

    # deleting the RateLimit lifts it
    assert mesh.cli("delete", "ratelimit", "productpage", "-n", "default").returncode == 0
    wait_for(lambda: get(base + "/productpage")[0] == 200, timeout=30, what="the limit lifted")
