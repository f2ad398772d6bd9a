"""Sidecar `ingress` listeners (Istio: when a Sidecar declares them, the proxy's inbound listeners are exactly those,
forwarding to each one's defaultEndpoint); what is not acted on in them is reported."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from sailmesh.generate import enforcement
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo, generated, resources, sidecar

INGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 7000, protocol: HTTP, name: http-alt}
    defaultEndpoint: 0.0.0.0:9080
  - port: {number: 7001, protocol: TCP, name: tcp-local}
    defaultEndpoint: 127.0.0.1:5555
  - port: {number: 7002, protocol: HTTP, name: http-default}
"""


def reviews():  # type: ignore[no-untyped-def]
    return sidecar("reviews-v1-0", "127.0.1.3", app_ports={9080: 41000}, app="reviews", version="v1")


def endpoint(c: cluster_pb2.Cluster) -> tuple[str, int]:
    sa = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    return sa.address, sa.port_value


def test_ingress_listeners_replace_the_workload_ports() -> None:
    snap = bookinfo(INGRESS)
    ls = generated(snap, reviews(), LISTENER, listener_pb2.Listener)
    inbound = sorted(n for n in ls if n.startswith("127.0.1.3_"))
    assert inbound == ["127.0.1.3_7000", "127.0.1.3_7001", "127.0.1.3_7002"]  # 9080 is no longer served
    cs = generated(snap, reviews(), CLUSTER, cluster_pb2.Cluster)
    assert endpoint(cs["inbound|7000||"]) == ("127.0.1.3", 41000)  # 0.0.0.0:9080 = the app's port 9080
    assert endpoint(cs["inbound|7001||"]) == ("127.0.0.1", 5555)  # a loopback endpoint as written
    assert endpoint(cs["inbound|7002||"]) == ("127.0.1.3", 7002)  # unset: the listener's own port
    assert "inbound|9080||" not in cs
    assert ls["127.0.1.3_7001"].filter_chains[-1].filters[-1].name == "envoy.filters.network.tcp_proxy"


def test_other_workloads_keep_their_ports() -> None:
    ls = generated(bookinfo(INGRESS), sidecar(), LISTENER, listener_pb2.Listener)
    assert "127.0.1.1_9080" in ls


def test_ingress_is_enforced_but_bind_and_unix_endpoints_are_reported() -> None:
    assert enforcement.not_enforced(resources(INGRESS)[0]) == []
    partial = INGRESS.replace("    defaultEndpoint: 127.0.0.1:5555\n",
                              "    defaultEndpoint: unix:///var/run/app.sock\n    bind: 127.0.0.1\n")
    assert enforcement.not_enforced(resources(partial)[0]) == [
        "Sidecar default/reviews-ingress: accepted, not enforced: spec.ingress[1].bind, "
        "spec.ingress[1].defaultEndpoint: unix:// (no listener is built)"]
