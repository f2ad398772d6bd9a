"""DestinationRule fields the sidecars act on since session 7, through real Envoy: `loadBalancer.simple: PASSTHROUGH`
and `workloadSelector` (with client `tls.credentialName` at the selected sidecars); since session 8 several rules for
one host merged as Istio merges them.

The "external" servers run in this test on a loopback address no mesh process uses; ServiceEntries make them
mesh services (their endpoints are that address), so the mesh's DNS answers their hosts with it.
"""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.outside_servers import OutsideServers, server_tls
from tests.e2e.test_mesh_gateway_tls import b64, issue, make_ca
from tests.e2e.traffic_support import NO_PROXY

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: other, labels: {app: other}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
# PASSTHROUGH: the service port is where the "resolved" server listens; its only endpoint serves the port named
# http elsewhere (the "eds" server). Load balancing over EDS reaches "eds"; the original destination (the address
# the name resolves to, at the port the caller dialled) reaches "resolved".
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pinned}
spec:
  hosts: [pinned.example.test]
  ports: [{number: {RESOLVED_PORT}, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {http: {EDS_PORT}}}]
---
# A server outside the mesh that requires a client certificate from the client CA (Istio's mTLS origination task)
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-nginx}
spec:
  hosts: [my-nginx.example.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: {ADDRESS}, ports: {http: {MTLS_PORT}}}]
---
# two endpoints told apart by a label: version a is the "eds" server, version b the "resolved" one
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: versions}
spec:
  hosts: [versions.example.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - {address: {ADDRESS}, ports: {http: {EDS_PORT}}, labels: {version: a}}
  - {address: {ADDRESS}, ports: {http: {RESOLVED_PORT}}, labels: {version: b}}
---
apiVersion: v1
kind: Secret
metadata: {name: client-credential, namespace: default}
data: {tls.crt: {CLIENT_CRT}, tls.key: {CLIENT_KEY}, ca.crt: {CA_CRT}}
"""

PASSTHROUGH = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pinned}
spec:
  host: pinned.example.test
  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
"""

# Istio's DestinationRule reference: "credentialName ... is applicable at sidecars only if DestinationRule has a
# workloadSelector"; the workloadSelector applies the rule to the selected workloads of its namespace only.
SELECTED_MTLS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate-mtls-for-sleep}
spec:
  host: my-nginx.example.test
  workloadSelector:
    matchLabels: {app: sleep}
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: client-credential
      sni: my-nginx.example.test
"""

# Two rules for one host, each with one subset, and a route to the second rule's subset: Istio merges the rules
# (PushContext.mergeDestinationRule: "Unique subsets (based on subset name) are concatenated"), so subset b exists.
MERGED = "".join(f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: versions-{v}}}
spec: {{host: versions.example.test, subsets: [{{name: {v}, labels: {{version: {v}}}}}]}}
---
""" for v in "ab") + """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: versions}
spec:
  hosts: [versions.example.test]
  http: [{route: [{destination: {host: versions.example.test, subset: b}}]}]
"""


class Servers(OutsideServers):
    """Plain HTTP servers "eds" and "resolved" and an mTLS server "mtls" on one loopback address."""

    def __init__(self, root: pathlib.Path) -> None:
        super().__init__(252)
        ca, client_ca = make_ca("example.test"), make_ca("client-ca")
        self.ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
        self.client = issue(client_ca, "client.example.test", client=True)
        (root / "client-ca.pem").write_bytes(client_ca[0].public_bytes(serialization.Encoding.PEM))
        self.add("eds", "eds")
        self.add("resolved", "resolved")
        self.add("mtls", "mtls", server_tls(root, ca, "my-nginx.example.test", str(root / "client-ca.pem")))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, servers: Servers) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("dr-config")
    (config / "mesh.yaml").write_text(MESH.replace("{ADDRESS}", servers.address)
                                      .replace("{RESOLVED_PORT}", str(servers.port("resolved")))
                                      .replace("{EDS_PORT}", str(servers.port("eds")))
                                      .replace("{MTLS_PORT}", str(servers.port("mtls")))
                                      .replace("{CLIENT_CRT}", b64(servers.client[0]))
                                      .replace("{CLIENT_KEY}", b64(servers.client[1]))
                                      .replace("{CA_CRT}", b64(servers.ca_pem)))
    with RunningMesh(str(tmp_path_factory.mktemp("dr-state")), dirs=[str(config)]) as m:
        yield m


def _get(mesh: RunningMesh, workload: str, url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """GET through the workload's sidecar (its HTTP_PROXY); (0, error) when the connection fails."""
    inst = find_instance(MeshState.load(mesh.state_dir), workload, "default")
    assert inst is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": inst.env["HTTP_PROXY"]}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"raw": e.read().decode(errors="replace")}
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def _clusters(mesh: RunningMesh, workload: str) -> list[dict]:  # type: ignore[type-arg]
    inst = find_instance(MeshState.load(mesh.state_dir), workload, "default")
    assert inst is not None
    with NO_PROXY.open(f"http://{inst.address}:15000/config_dump?resource=dynamic_active_clusters",
                       timeout=5) as r:
        return [c["cluster"] for c in json.loads(r.read())["configs"]]


def test_passthrough_goes_to_the_resolved_address_not_an_eds_endpoint(mesh: RunningMesh, tmp_path: pathlib.Path,
                                                                       servers: Servers) -> None:
    """Istio: PASSTHROUGH "will forward the connection to the original IP address requested by the caller without
    doing any form of load balancing". The only EDS endpoint is the "eds" server; with the rule every request
    reaches "resolved", which no endpoint names: the address the host resolves to (the mesh's DNS), at the port
    the caller dialled."""
    url = f"http://pinned.example.test:{servers.port('resolved')}/"
    cluster = f"outbound|{servers.port('resolved')}||pinned.example.test"
    wait_for(lambda: _get(mesh, "sleep", url)[1].get("server") == "eds", timeout=60, interval=0.5,
             what="pinned.example.test balanced over its endpoint before the rule")
    mesh.apply_text(tmp_path, "passthrough", PASSTHROUGH)
    try:
        wait_for(lambda: _get(mesh, "sleep", url)[1].get("server") == "resolved", timeout=60, interval=0.5,
                 what="PASSTHROUGH to the resolved address")
        seen = [_get(mesh, "sleep", url)[1].get("server") for _ in range(20)]
        assert seen == ["resolved"] * 20, seen
        (dumped,) = [c for c in _clusters(mesh, "sleep") if c["name"] == cluster]
        assert dumped["type"] == "LOGICAL_DNS" and "eds_cluster_config" not in dumped, dumped
    finally:
        mesh.delete_text(tmp_path, "passthrough")
    # the rule gone, the cluster balances over EDS again
    wait_for(lambda: _get(mesh, "sleep", url)[1].get("server") == "eds", timeout=60, interval=0.5,
             what="EDS again after the rule is deleted")


def test_workload_selector_originates_mtls_with_a_credential_for_the_selected_sidecar_only(
        mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Istio's DestinationRule reference: with a workloadSelector the rule applies only to the selected workloads of
    its namespace, and `credentialName` is read at sidecars only for such rules. `sleep` (selected) reaches the
    server that requires a client certificate, presenting the one from the Secret; `other` (not selected) sends
    plain HTTP to the TLS port and gets no answer from the server (the sidecar's 503)."""
    url = "http://my-nginx.example.test/"
    mesh.apply_text(tmp_path, "selected-mtls", SELECTED_MTLS)
    try:
        def selected() -> dict | None:  # type: ignore[type-arg]
            status, body = _get(mesh, "sleep", url)
            return body if status == 200 else None

        body = wait_for(selected, timeout=60, interval=0.5, what="mTLS origination at the selected sidecar")
        assert (body["server"], body["client"]) == ("mtls", "client.example.test"), body
        for _ in range(5):
            status, body = _get(mesh, "other", url)
            assert status == 503 and "server" not in body, (status, body)
        assert _get(mesh, "sleep", url)[0] == 200
    finally:
        mesh.delete_text(tmp_path, "selected-mtls")
    # without the rule, neither sidecar originates TLS
    wait_for(lambda: _get(mesh, "sleep", url)[0] == 503, timeout=60, interval=0.5, what="no TLS without the rule")


def test_two_rules_for_one_host_are_merged(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Subset `b` is defined by the second rule only; with the rules merged (Istio's mergeDestinationRule) the route
    to it reaches only the version-b endpoint ("resolved"). Before, only the oldest rule applied: no subset b cluster,
    503."""
    url = "http://versions.example.test/"
    mesh.apply_text(tmp_path, "merged", MERGED)
    try:
        # before the rules and the route are in force the service balances over both endpoints, so one "resolved"
        # answer proves nothing: wait for the subset's cluster, then for ten answers in a row from it
        wait_for(lambda: "outbound|80|b|versions.example.test" in {c["name"] for c in _clusters(mesh, "sleep")},
                 timeout=60, interval=0.5, what="the second rule's subset cluster")
        wait_for(lambda: all(_get(mesh, "sleep", url)[1].get("server") == "resolved" for _ in range(10)),
                 timeout=60, interval=0.5, what="the route to the second rule's subset")
        seen = [_get(mesh, "sleep", url)[1].get("server") for _ in range(20)]
        assert seen == ["resolved"] * 20, seen
        names = {c["name"] for c in _clusters(mesh, "sleep")}
        assert {"outbound|80|a|versions.example.test", "outbound|80|b|versions.example.test"} <= names
    finally:
        mesh.delete_text(tmp_path, "merged")
