"""gRPC through the mesh and Istio's gRPC metrics, through real Envoy.

A gRPC echo service (sailmesh.samples.grpcecho) behind its sidecar, reached through the ingress gateway over
HTTP/2. Istio's standard metrics for gRPC (istio.io "Istio Standard Metrics"): `request_protocol="grpc"`,
`grpc_response_status` the call's status code (0 OK, 3 INVALID_ARGUMENT), and the message counters
`istio_request_messages_total` / `istio_response_messages_total` (gRPC requests only), here from the
destination reporter (the echo's sidecar) and the source reporter (the gateway).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_metrics import istio_samples, proxies

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{name: grpc, port: 9080}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: echo-v1, namespace: default, labels: {app: echo, version: v1}}
spec:
  command: [python, -m, sailmesh.samples.grpcecho]
  ports: [{name: grpc, containerPort: 9080, protocol: GRPC}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: grpc, protocol: GRPC}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: echo, port: {number: 9080}}}]}]
"""
IDENTITY = {"request_serializer": None, "response_deserializer": None}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    root = tmp_path_factory.mktemp("grpc-mesh")
    (root / "config").mkdir()
    (root / "config" / "mesh.yaml").write_text(MESH)
    m = RunningMesh(str(root / "state"), dirs=[str(root / "config")])
    yield m
    m.stop()


def channel(mesh: RunningMesh) -> grpc.Channel:
    target = mesh.gateway_url().removeprefix("http://")
    return grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])


def grpc_series(ip: str, metric: str) -> dict[tuple[str, str], float]:
    """(reporter, grpc_response_status) -> value of one metric's gRPC series on one proxy."""
    out: dict[tuple[str, str], float] = {}
    for labels, v in istio_samples(ip).get(metric, {}).items():
        d = dict(labels)
        assert d["request_protocol"] == "grpc" or metric == "istio_requests_total"
        if d["request_protocol"] == "grpc":
            key = (d["reporter"], d["grpc_response_status"])
            out[key] = out.get(key, 0.0) + v
    return out


def test_grpc_calls_are_counted_with_status_and_messages(mesh: RunningMesh) -> None:
    with channel(mesh) as ch:
        unary = ch.unary_unary("/sailmesh.Echo/Unary", **IDENTITY)
        wait_for(lambda: unary(b"ping", timeout=5) == b"ping", timeout=60, interval=0.5,
                 what="echo through the gateway")
        addrs = proxies(mesh)
        echo = next(a for n, a in addrs.items() if n.startswith("echo-v1"))
        gateway = next(a for n, a in addrs.items() if "ingressgateway" in n)
        # the ping is counted within a flush interval (a second); start from there
        wait_for(lambda: grpc_series(echo, "istio_requests_total").get(("destination", "0")), timeout=20,
                 what="the ping counted")
        base_req = grpc_series(echo, "istio_request_messages_total").get(("destination", "0"), 0.0)
        base_resp = grpc_series(echo, "istio_response_messages_total").get(("destination", "0"), 0.0)
        base_calls = grpc_series(echo, "istio_requests_total").get(("destination", "0"), 0.0)
        # 2 bidirectional calls of 4 messages each way, 3 unary calls, 1 failing unary call
        stream = ch.stream_stream("/sailmesh.Echo/Stream", **IDENTITY)
        for _ in range(2):
            assert list(stream(iter([b"a", b"b", b"c", b"d"]), timeout=10)) == [b"a", b"b", b"c", b"d"]
        for _ in range(3):
            assert unary(b"hello", timeout=10) == b"hello"
        with pytest.raises(grpc.RpcError) as err:
            unary(b"fail:no", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def counted() -> bool:
        return grpc_series(echo, "istio_requests_total").get(("destination", "0"), 0.0) >= base_calls + 5
    wait_for(counted, timeout=20, what="the echo sidecar's gRPC requests counted")
    calls = grpc_series(echo, "istio_requests_total")
    assert calls[("destination", "0")] == base_calls + 5
    assert calls[("destination", "3")] == 1  # INVALID_ARGUMENT, with its HTTP status 200 (gRPC's rule)
    sent = grpc_series(echo, "istio_request_messages_total")
    received = grpc_series(echo, "istio_response_messages_total")
    assert sent[("destination", "0")] - base_req == 2 * 4 + 3
    assert received[("destination", "0")] - base_resp == 2 * 4 + 3
    assert sent[("destination", "3")] == 1 and received[("destination", "3")] == 0
    # the gateway reports the same calls as their source, with the same counts
    wait_for(lambda: grpc_series(gateway, "istio_requests_total").get(("source", "3"), 0.0) == 1, timeout=20,
             what="the gateway's gRPC requests counted")
    gw_sent = grpc_series(gateway, "istio_request_messages_total")
    assert gw_sent[("source", "0")] >= 2 * 4 + 3
    codes = {dict(k)["response_code"] for k in istio_samples(echo)["istio_requests_total"]
             if dict(k)["request_protocol"] == "grpc"}
    assert codes == {"200"}
