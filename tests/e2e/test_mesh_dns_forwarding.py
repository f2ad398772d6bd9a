"""Envoy's DNS clusters keep resolving mesh-only names while a name outside the mesh keeps failing, through real
Envoy: the mesh's DNS (controlplane/dns.py) is Envoy's only resolver and forwards the names it does not own to the
system's nameservers, passing their answer through (NXDOMAIN included).

Before, Envoy's c-ares listed the mesh's DNS first and the system's nameservers after it, the mesh answering
REFUSED for other names. c-ares counts a REFUSED answer as a failure of that server and orders its servers by
failures, so after one lookup of a name outside the mesh it asked the system's nameserver first, whose NXDOMAIN for
`web.default.svc.cluster.local` is final: the mesh-only cluster lost its host at its next refresh."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import NO_PROXY, WEB_AND_CLIENT, admin_ip, running, via

pytestmark = pytest.mark.e2e

MESH = WEB_AND_CLIENT + """\
---
# a DNS cluster whose endpoint only the mesh's DNS can resolve
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-dns}
spec:
  hosts: [web-dns.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9300, name: http, protocol: HTTP}]
  endpoints: [{address: web.default.svc.cluster.local, ports: {http: 8000}}]
---
# a DNS cluster whose endpoint no nameserver resolves (RFC 6761: .invalid is NXDOMAIN everywhere)
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: broken}
spec:
  hosts: [broken.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9400, name: http, protocol: HTTP}]
  endpoints: [{address: nowhere.invalid}]
"""

WEB_DNS = "cluster.outbound|9300||web-dns.example.test"
BROKEN = "cluster.outbound|9400||broken.example.test"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "dns-forwarding", MESH) as (m, _config):
        yield m


def stats(ip: str, prefix: str) -> dict[str, int]:
    """Envoy's counters and gauges whose names start with `prefix` (the prefix removed)."""
    with NO_PROXY.open(f"http://{ip}:15000/stats?filter=^{prefix.replace('|', '.')}", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key.startswith(prefix) and value.isdigit():
                out[key[len(prefix):]] = int(value)
        return out


def test_mesh_only_names_keep_resolving_while_another_name_fails(mesh: RunningMesh) -> None:
    get = via(mesh, "client")
    url = "http://web-dns.example.test:9300/"
    wait_for(lambda: get(url)[0] == 200, timeout=60, interval=0.3, what=f"{url} answering")
    ip = admin_ip(mesh, "client")
    with NO_PROXY.open(f"http://{ip}:15000/config_dump", timeout=10) as r:
        bootstrap = json.loads(r.read())["configs"][0]["bootstrap"]
    resolvers = bootstrap["typed_dns_resolver_config"]["typed_config"]["resolvers"]
    assert [(a["socket_address"]["address"], a["socket_address"]["port_value"]) for a in resolvers] == \
        [("127.0.0.1", mesh.dns_port)]  # the mesh's DNS alone: nothing for c-ares to put before it
    start = stats(ip, f"{BROKEN}.")
    # Envoy re-resolves both every 5 s (its dns_refresh_rate; the mesh's TTL is 5 s too): watch the mesh-only
    # cluster until the failing name has been asked again four times (and the mesh-only name as often)
    low, samples, statuses = 10, 0, []
    deadline = time.monotonic() + 90
    while True:
        broken, web = stats(ip, f"{BROKEN}."), stats(ip, f"{WEB_DNS}.")
        low = min(low, web.get("membership_healthy", 0))
        samples += 1
        if samples % 5 == 0:
            statuses.append(get(url)[0])
        retried = broken.get("update_attempt", 0) - start.get("update_attempt", 0)
        if retried >= 4 and web.get("update_attempt", 0) >= 6:
            break
        assert time.monotonic() < deadline, f"the failing name was re-resolved {retried} times in 90 s"
        time.sleep(0.5)
    cares = stats(ip, "dns.cares.")
    keys = ("update_attempt", "membership_total", "membership_healthy", "upstream_rq_503")
    print(f"{samples} samples; web-dns {[(k, web.get(k)) for k in keys]}, lowest healthy {low}; "
          f"broken {[(k, broken.get(k)) for k in keys[:2]]}; dns.cares {cares}; requests {statuses}")
    assert broken.get("membership_total", 0) == 0  # the failing name never resolved (NXDOMAIN passed through)
    assert cares.get("not_found", 0) > 0  # ... and Envoy saw it as "no such name"
    assert low == 1 and web.get("membership_healthy") == 1, f"the mesh-only name stopped resolving: {web}"
    assert statuses and set(statuses) == {200}, statuses
