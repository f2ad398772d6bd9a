"""DestinationRule `loadBalancer.simple: PASSTHROUGH` at a captured sidecar, through a real Envoy in private network
namespaces (root; tests/e2e/outbound_netns.py's pod and peer): Istio's ORIGINAL_DST cluster "will forward the
connection to the original IP address requested by the caller without doing any form of load balancing"
(DestinationRule reference, LoadBalancerSettings.SimpleLB PASSTHROUGH).

The app calls reviews' ClusterIP 10.96.0.12:9080, an address the peer namespace owns (as kube-proxy would land it
on a pod); the mesh's one endpoint for reviews is 10.77.0.9, where nothing answers. Without the rule the sidecar
balances over the endpoints and the call fails (503); with it, the call reaches 10.96.0.12, the address the app
dialled, through the service's listener, route and cluster."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from sailmesh.testing.netns_capture import PEER_IP_OTHER
from tests.e2e.outbound_netns import CLUSTER_IP, OWN_CLUSTER_IP
from tests.e2e.test_captured_outbound_envoy import REVIEWS_CLUSTER, ROUTE_HEADER, _bootstrap, _run
from tests.e2e.test_redirect_envoy import _unavailable

pytestmark = pytest.mark.e2e
CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
PASSTHROUGH = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
"""


def _hosts(got: dict[str, Any]) -> dict[str, int]:
    """host address -> rq_total of the reviews cluster, from Envoy's /clusters."""
    (status,) = [c for c in got["clusters"]["cluster_statuses"] if c["name"] == CLUSTER]
    out = {}
    for h in status.get("host_statuses", ()):
        sa = h["address"]["socket_address"]
        out[f"{sa['address']}:{sa['port_value']}"] = next(
            (int(s.get("value", 0)) for s in h.get("stats", ()) if s["name"] == "rq_total"), 0)
    return out


@pytest.mark.parametrize("rule", [True, False], ids=["passthrough", "endpoints"])
def test_captured_passthrough_reaches_the_address_the_app_dialled(tmp_path: pathlib.Path, rule: bool) -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    path = _bootstrap(tmp_path, 15000, *([PASSTHROUGH] if rule else []), reviews_ip=PEER_IP_OTHER)
    got = _run(path, "REDIRECT", OWN_CLUSTER_IP)  # in the private namespace: no other Envoy there
    svc = got["service"]
    hosts = _hosts(got)
    # `server: envoy`: the outbound sidecar's own name (Istio's proxy headers for the outbound class)
    if not rule:  # the endpoint the mesh lists does not answer: the sidecar's 503, never the ClusterIP
        assert svc.get("status") == 503 and svc["headers"].get("server") == "envoy", got
        assert f"{CLUSTER_IP}:9080" not in hosts and f"{PEER_IP_OTHER}:9080" in hosts, hosts
        return
    assert svc.get("status") == 200, got
    # through the sidecar's listener, the VirtualService's route and the PASSTHROUGH cluster
    assert svc["headers"].get(ROUTE_HEADER) == "reviews-vs" and svc["headers"].get("server") == "envoy"
    assert json.loads(svc["body"])["app"] == "reviews"
    assert got["stats_after_service"][REVIEWS_CLUSTER] == 1, got["stats_after_service"]
    # the cluster's one host is the original destination (ORIGINAL_DST makes it from the connection), one request
    assert hosts == {f"{CLUSTER_IP}:9080": 1}, hosts
