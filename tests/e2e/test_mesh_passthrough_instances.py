"""DestinationRule `loadBalancer.simple: PASSTHROUGH` reaching the instance the client asked for, through real Envoy.

Istio's reference: PASSTHROUGH "will forward the connection to the original IP address requested by the caller
without doing any form of load balancing". Apps here use the sidecar as an explicit HTTP proxy, so what the caller
asked for is the request's authority (docs/translation.md "Clusters"). The service is a ServiceEntry whose
`addresses` are the two instances' addresses (its virtual host matches requests for them) and whose endpoints are
the same two instances, each an echo server on its own loopback address at the service port. Without the rule a
request for one instance's address is balanced over both endpoints; with it, every request reaches the instance
it names, and a request by name reaches the address the mesh's DNS gives first.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.outside_servers import OutsideServers
from tests.e2e.traffic_support import NO_PROXY

pytestmark = pytest.mark.e2e

HOST = "instances.example.test"

MESH = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: instances}
spec:
  hosts: [instances.example.test]
  addresses: [{A}, {B}]
  ports: [{number: {PORT}, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {A}}, {address: {B}}]
---
apiVersion: v1
kind: Service
metadata: {name: named}
spec:
  clusterIP: 10.96.77.7
  selector: {app: named}
  ports: [{port: {PORT}, name: http, targetPort: {PORT}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: named-a}
spec: {address: {A}, labels: {app: named}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: named-b}
spec: {address: {B}, labels: {app: named}}
"""

PASSTHROUGH = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: instances}
spec:
  host: instances.example.test
  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
"""


NAMED_PASSTHROUGH = PASSTHROUGH.replace("instances.example.test", "named").replace("instances", "named")


class Instances:
    """Two echo servers, "a" and "b", on two loopback addresses at one port."""

    def __init__(self) -> None:
        self.a, self.b = OutsideServers(11), OutsideServers(12)
        self.a.add("a", "a")
        self.port = self.a.port("a")
        self.b.add("b", "b", port=self.port)

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture(scope="module")
def instances() -> Iterator[Instances]:
    for _ in range(5):  # the second address's port may be taken (another test's server): try other addresses
        try:
            made = Instances()
            break
        except OSError:
            continue
    else:
        pytest.fail("no two loopback addresses with one free port")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, instances: Instances) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("passthrough-config")
    (config / "mesh.yaml").write_text(MESH.replace("{A}", instances.a.address).replace("{B}", instances.b.address)
                                      .replace("{PORT}", str(instances.port)))
    with RunningMesh(str(tmp_path_factory.mktemp("passthrough-state")), dirs=[str(config)]) as m:
        yield m


def _echo(mesh: RunningMesh, url: str) -> dict:  # type: ignore[type-arg]
    """What the echo server a GET through sleep's sidecar (its HTTP_PROXY) reached answered ({} on failure)."""
    inst = find_instance(MeshState.load(mesh.state_dir), "sleep", "default")
    assert inst is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": inst.env["HTTP_PROXY"]}))
    try:
        with opener.open(url, timeout=10) as r:
            return dict(json.loads(r.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def _server(mesh: RunningMesh, url: str) -> str:
    """The name of the echo server a GET through sleep's sidecar reached ("" on failure)."""
    return str(_echo(mesh, url).get("server", ""))


def _cluster(mesh: RunningMesh, name: str) -> dict:  # type: ignore[type-arg]
    inst = find_instance(MeshState.load(mesh.state_dir), "sleep", "default")
    assert inst is not None
    with NO_PROXY.open(f"http://{inst.address}:15000/config_dump?resource=dynamic_active_clusters",
                       timeout=5) as r:
        found = [c["cluster"] for c in json.loads(r.read())["configs"] if c["cluster"]["name"] == name]
    return found[0] if found else {}


def _apply(mesh: RunningMesh, tmp_path: pathlib.Path, name: str, rule: str, cluster: str) -> None:
    """Apply a PASSTHROUGH rule and wait until sleep's sidecar has its forward proxy cluster."""
    mesh.apply_text(tmp_path, name, rule)
    wait_for(lambda: _cluster(mesh, cluster).get("cluster_type", {}).get("name")
             == "envoy.clusters.dynamic_forward_proxy", timeout=60, interval=0.5,
             what="the PASSTHROUGH cluster at sleep's sidecar")


def test_passthrough_reaches_the_instance_asked_for(mesh: RunningMesh, tmp_path: pathlib.Path,
                                                    instances: Instances) -> None:
    a_url = f"http://{instances.a.address}:{instances.port}/"
    b_url = f"http://{instances.b.address}:{instances.port}/"
    name_url = f"http://{HOST}:{instances.port}/"
    cluster = f"outbound|{instances.port}||{HOST}"
    # without the rule: a request for instance a's address is one of the service's, balanced over both endpoints
    seen: set[str] = set()
    wait_for(lambda: seen.add(_server(mesh, a_url)) or {"a", "b"} <= seen, timeout=90, interval=0.1,
             what="requests for a's address balanced over both instances before the rule")
    _apply(mesh, tmp_path, "passthrough", PASSTHROUGH, cluster)
    try:
        # every request reaches the instance it names, never the other one
        got_a = [_server(mesh, a_url) for _ in range(30)]
        got_b = [_server(mesh, b_url) for _ in range(30)]
        assert got_a == ["a"] * 30, got_a
        assert got_b == ["b"] * 30, got_b
        # by name: one of the addresses the mesh's DNS answers, as a client's own connect, and no balancing over
        # the service's instances. Which one is the resolver's choice (getaddrinfo's RFC 6724 sorting can put
        # either loopback address first; a CI run got b where the DNS answer listed a first).
        by_name = [_server(mesh, name_url) for _ in range(20)]
        assert len(set(by_name)) == 1 and by_name[0] in ("a", "b"), by_name
    finally:
        mesh.delete_text(tmp_path, "passthrough")
    seen.clear()
    wait_for(lambda: seen.add(_server(mesh, b_url)) or {"a", "b"} <= seen, timeout=90, interval=0.1,
             what="balanced again after the rule is deleted")


def test_passthrough_by_short_name_resolves_as_the_search_list_would(mesh: RunningMesh, tmp_path: pathlib.Path,
                                                                      instances: Instances) -> None:
    """A Kubernetes Service with a ClusterIP (`named`, in sleep's namespace; its endpoints instances a and b): with
    PASSTHROUGH, `http://named:PORT` (and `named.default`, `named.default.svc`) reaches the address the FQDN
    resolves to, as a pod's search list (`default.svc.cluster.local svc.cluster.local cluster.local`) would make
    the client's own connect; the app's Host header arrives as it wrote it. Before session 11 these answered 503
    (Envoy's resolver has no search list)."""
    port = instances.port
    short = [f"http://named:{port}/", f"http://named.default:{port}/", f"http://named.default.svc:{port}/"]
    fqdn = f"http://named.default.svc.cluster.local:{port}/"
    seen: set[str] = set()  # without the rule: the short name is the Service's, balanced over its endpoints
    wait_for(lambda: seen.add(_server(mesh, short[0])) or {"a", "b"} <= seen, timeout=90, interval=0.1,
             what="requests by the short name balanced over both endpoints before the rule")
    cluster = f"outbound|{port}||named.default.svc.cluster.local"
    _apply(mesh, tmp_path, "named-passthrough", NAMED_PASSTHROUGH, cluster)
    try:
        by_fqdn = [_server(mesh, fqdn) for _ in range(10)]
        assert len(set(by_fqdn)) == 1 and by_fqdn[0] in ("a", "b"), by_fqdn
        for url in short:
            got = [_echo(mesh, url) for _ in range(10)]
            # every request answered (not 503) by the instance the FQDN resolves to: no balancing
            assert [g.get("server") for g in got] == by_fqdn, (url, got)
            host = url.removeprefix("http://").rstrip("/")
            assert {{k.lower(): v for k, v in g["headers"].items()}.get("host") for g in got} == {host}, (url, got)
    finally:
        mesh.delete_text(tmp_path, "named-passthrough")


def test_a_captured_sidecars_original_dst_cluster_is_accepted_by_envoy(tmp_path: pathlib.Path) -> None:
    """A captured sidecar (interception mode REDIRECT) gets Istio's plain ORIGINAL_DST cluster for PASSTHROUGH;
    its whole generated config, with that cluster, passes real Envoy's validation (`--mode validate` binds no
    port). Traffic through it needs the captured outbound listeners (issue 14), so only the config is proven here."""
    from envoy.config.cluster.v3 import cluster_pb2

    from sailmesh.processes import envoy_binary, free_port
    from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
    from tests.unit.test_generate_passthrough_lb import RULE
    from tests.unit.test_generate_support import bookinfo, sidecar

    captured = dataclasses.replace(sidecar(), metadata=MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))
    b = static_bootstrap(bookinfo(RULE), captured, free_port())
    (c,) = [c for c in b.static_resources.clusters if c.name == "outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert c.type == cluster_pb2.Cluster.ORIGINAL_DST and c.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    path = write_bootstrap(tmp_path, b)
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


def test_a_route_enabling_the_short_name_filter_is_accepted_where_the_chain_lacks_it(tmp_path: pathlib.Path) -> None:
    """Routes to a PASSTHROUGH forward proxy enable the outbound chain's disabled set_filter_state (FilterConfig
    with an empty `config`); routes are shared by sidecars whatever their capture, so a captured sidecar (whose
    chain has no such filter) gets the entry too: real Envoy accepts that config (`is_optional`)."""
    from google.protobuf.json_format import MessageToDict

    from sailmesh.generate.filters.basic import SET_FILTER_STATE_FILTER
    from sailmesh.processes import envoy_binary, free_port
    from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
    from tests.unit.test_generate_passthrough_lb import _cluster_ip
    from tests.unit.test_generate_support import sidecar

    captured = dataclasses.replace(sidecar(), metadata=MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))
    for proxy in (captured, sidecar()):
        b = static_bootstrap(_cluster_ip(), proxy, free_port())
        text = str(MessageToDict(b))
        assert SET_FILTER_STATE_FILTER in text  # the route entry (and, explicit, the disabled filter)
        path = write_bootstrap(tmp_path, b)
        r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                            "-l", "warning"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (proxy.metadata, r.stdout[-3000:], r.stderr[-3000:])
