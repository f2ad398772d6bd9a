"""`sailmesh demo httpbin`: the set-up of Istio's security tasks comes up, and `sailmesh exec` runs curl as sleep
in foo (through its sidecar) and in legacy (through the plain forwarder, no sidecar) as istio.io's commands do:
`kubectl exec ... -n foo -- curl http://httpbin.bar:8000/ip -s -o /dev/null -w "%{http_code}"` prints 200."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sailmesh.telemetry import peer
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_metrics import total

pytestmark = pytest.mark.e2e
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/test installs "
                                                                     "it with apt-get where it runs as root)")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    m = RunningMesh(str(tmp_path_factory.mktemp("httpbin-demo")), demo=True, extra=["httpbin"])
    try:
        wait_for(lambda: "httpbin is up." in m.output(), timeout=30, what="the httpbin banner")
        yield m
    finally:
        m.stop()


def sm_exec(mesh: RunningMesh, name: str, ns: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sailmesh", "exec", name, "-n", ns, "--state-dir", mesh.state_dir,
                           "--", *command], capture_output=True, text=True, timeout=60)


def curl_code(mesh: RunningMesh, src_ns: str, url: str) -> str:
    r = sm_exec(mesh, "sleep", src_ns, "curl", "-s", url, "-o", "/dev/null", "-w", "%{http_code}")
    return r.stdout.strip()


def headers_seen(mesh: RunningMesh, src_ns: str, dst_ns: str) -> dict[str, str]:
    r = sm_exec(mesh, "sleep", src_ns, sys.executable, "-c",
                f"import urllib.request; print(urllib.request.urlopen('http://httpbin.{dst_ns}:8000/headers').read()"
                ".decode())")
    assert r.returncode == 0, r.stderr
    headers: dict[str, str] = json.loads(r.stdout)["headers"]
    return headers


def test_banner_and_workloads(mesh: RunningMesh) -> None:
    """Six instances: httpbin and sleep in foo and bar with sidecars, in legacy without."""
    r = mesh.cli("get", "workloads", "-A", "-o", "json", check=True)
    items = json.loads(r.stdout)
    assert sorted((i["namespace"], i["workload"], i["sidecar"]) for i in items) == [
        ("bar", "httpbin", True), ("bar", "sleep", True), ("foo", "httpbin", True), ("foo", "sleep", True),
        ("legacy", "httpbin", False), ("legacy", "sleep", False)]
    for i in items:
        assert i["serviceAccount"] == i["workload"]
        if i["workload"] == "httpbin":
            assert i["labels"] == {"app": "httpbin", "version": "v1"}
            assert [p["containerPort"] for p in i["ports"]] == [8080]  # Istio's sample: port 8000 -> 8080
        else:
            assert i["labels"] == {"app": "sleep"}
    table = mesh.cli("get", "workloads", "-n", "legacy", check=True).stdout.splitlines()
    assert len(table) == 3 and all(line.split()[4] == "false" for line in table[1:])


@needs_curl
@pytest.mark.parametrize(("src", "dst"), [("foo", "bar"), ("foo", "legacy"), ("legacy", "foo"),
                                          ("legacy", "legacy"), ("bar", "foo")])
def test_curl_from_sleep_to_httpbin_answers_200(mesh: RunningMesh, src: str, dst: str) -> None:
    """istio.io's check, for sleep with and without a sidecar (PERMISSIVE, the default, accepts plaintext)."""
    assert curl_code(mesh, src, f"http://httpbin.{dst}:8000/ip") == "200"


@needs_curl
def test_curl_service_name_forms_and_status(mesh: RunningMesh) -> None:
    assert curl_code(mesh, "legacy", "http://httpbin.bar.svc.cluster.local:8000/status/418") == "418"
    assert curl_code(mesh, "foo", "http://httpbin.bar.svc.cluster.local:8000/status/418") == "418"
    assert curl_code(mesh, "foo", "http://httpbin:8000/headers") == "200"  # short name: the client's namespace


def test_with_a_sidecar_requests_leave_through_it(mesh: RunningMesh) -> None:
    """A request from sleep.foo passes its sidecar (Envoy adds x-request-id); from sleep.legacy to
    httpbin.legacy no Envoy is on the path at all."""
    assert "X-Request-Id" in headers_seen(mesh, "foo", "legacy")
    assert "X-Request-Id" not in headers_seen(mesh, "legacy", "legacy")
    assert headers_seen(mesh, "legacy", "bar")["Host"] == "httpbin.bar:8000"


def test_ingress_gateway_routes_to_httpbin_in_foo(mesh: RunningMesh) -> None:
    """Istio's httpbin-gateway (port 80) is served on the gateway's 8080."""
    with NO_PROXY.open(mesh.gateway_url(8080) + "/headers", timeout=10) as r:
        assert r.status == 200
        assert "headers" in json.loads(r.read())



def _agent(mesh: RunningMesh, instance: str) -> str:
    """The address of a sidecar's agent (its status port 15020 serves Istio's metrics)."""
    state = json.loads(Path(mesh.state_dir, "mesh.json").read_text())
    (addr,) = [p["address"] for p in state["processes"] if p.get("role") == "agent" and p["name"].startswith(instance)]
    return str(addr)


def _fetch(mesh: RunningMesh, ns: str, url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """(response headers, body) of a GET from sleep in `ns` (through its sidecar, if it has one)."""
    code = ("import json, sys, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], "
            "headers=json.loads(sys.argv[2]))); print(json.dumps([dict(r.headers), r.read().decode()]))")
    r = sm_exec(mesh, "sleep", ns, sys.executable, "-c", code, url, json.dumps(headers or {}))
    assert r.returncode == 0, r.stderr
    got, body = json.loads(r.stdout)
    return {k.lower(): v for k, v in got.items()}, body


def test_istios_metadata_exchange_on_the_wire_with_a_peer_without_our_sidecar(mesh: RunningMesh) -> None:
    """Istio's metadata exchange (x-envoy-peer-metadata: base64 of a Struct of the node's metadata, and
    x-envoy-peer-metadata-id) as an Istio proxy on the other side sees it: the client's sidecar sends both headers;
    a response carrying an Istio server's headers names the destination in the client's metrics and reaches the app
    without them; a request carrying an Istio client's headers names the source in the server's metrics and
    reaches the app without them. httpbin in legacy (no sidecar) plays the Istio proxy."""
    seen = headers_seen(mesh, "foo", "legacy")  # what an Istio server sidecar would receive from ours
    sent = peer.decode(seen["X-Envoy-Peer-Metadata"])
    assert (sent.workload, sent.namespace, sent.app) == ("sleep", "foo", "sleep")
    assert seen["X-Envoy-Peer-Metadata-Id"].startswith("sidecar~")
    assert not {"X-Envoy-Peer-Metadata", "X-Envoy-Peer-Metadata-Id"} & set(headers_seen(mesh, "foo", "bar"))
    # an Istio server's answer: its metadata in the response headers (httpbin echoes them)
    istio_server = peer.encode("ratings-v9-0", "legacy", {"app": "ratings", "version": "v9"}, cluster="other")
    query = urllib.parse.urlencode({"x-envoy-peer-metadata": istio_server,
                                    "x-envoy-peer-metadata-id": "sidecar~10.0.0.9~ratings-v9-0.legacy~legacy.svc"})
    sleep_foo = _agent(mesh, "sleep-0.foo")

    def client_reported() -> bool:
        got, body = _fetch(mesh, "foo", f"http://httpbin.legacy:8000/response-headers?{query}")
        assert "x-envoy-peer-metadata" not in got and "x-envoy-peer-metadata-id" not in got  # stripped
        assert json.loads(body)["x-envoy-peer-metadata"] == istio_server  # (the app did answer with them)
        return total(sleep_foo, reporter="source", destination_workload="ratings-v9", destination_version="v9",
                     destination_app="ratings", destination_cluster="other",
                     destination_workload_namespace="legacy") > 0
    wait_for(client_reported, timeout=20, interval=1.0, what="the Istio server's workload on the client's metrics")
    # an Istio client's request: legacy has no sidecar, so its headers go to bar's sidecar as they are
    istio_client = peer.encode("reviews-v7-0", "legacy", {"app": "reviews", "version": "v7"})
    httpbin_bar = _agent(mesh, "httpbin-0.bar")

    def server_reported() -> bool:
        _, body = _fetch(mesh, "legacy", "http://httpbin.bar:8000/headers",
                         {"x-envoy-peer-metadata": istio_client, "x-envoy-peer-metadata-id": "sidecar~x"})
        assert not {"X-Envoy-Peer-Metadata", "X-Envoy-Peer-Metadata-Id"} & set(json.loads(body)["headers"])
        return total(httpbin_bar, reporter="destination", source_workload="reviews-v7", source_version="v7",
                     source_app="reviews", source_workload_namespace="legacy") > 0
    wait_for(server_reported, timeout=20, interval=1.0, what="the Istio client's workload on the server's metrics")
