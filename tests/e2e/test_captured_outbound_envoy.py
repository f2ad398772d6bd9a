"""A pod captured in Istio's REDIRECT mode calls out through a real Envoy on generated config: in private network
namespaces (root), with the injector's own istio-iptables args, the app's call to a service's ClusterIP goes through
virtualOutbound (15001) to the service's per-port listener and route, a destination with no listener passes through
(PassthroughCluster, ORIGINAL_DST), and the proxy's own traffic (UID 1337) is not captured."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from types import MappingProxyType
from typing import Any

import pytest

from sailmesh.processes import envoy_binary, free_port
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service
from sailmesh.testing.netns_capture import PEER_IP, PEER_IP6, POD_IP, POD_IP6
from sailmesh.webhook.inject import InjectionConfig, iptables_args
from tests.conftest import ROOT
from tests.e2e.outbound_netns import CLUSTER_IP, CLUSTER_IP6, ECHO_HEADER, ECHO_IP, ECHO_IP6, ECHO_PORT
from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
from tests.e2e.test_redirect_envoy import PATH, _unavailable
from tests.unit.test_generate_capture_outbound import egress_proxy_sidecar
from tests.unit.test_generate_support import make_snapshot, resources, service, sidecar, workload
from tests.unit.test_generate_uncaptured_golden import REGISTRY_ONLY

pytestmark = pytest.mark.e2e
ROUTE_HEADER = "x-captured-route"
REVIEWS_VS = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - headers: {{response: {{add: {{{ROUTE_HEADER}: reviews-vs}}}}}}
    route:
    - destination: {{host: reviews}}
"""
ECHO_VS = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo]
  http:
  - match: [{{headers: {{{ECHO_HEADER}: {{exact: header-route}}}}}}]
    headers: {{response: {{add: {{{ROUTE_HEADER}: echo-header-route}}}}}}
    route:
    - destination: {{host: echo}}
  - route:
    - destination: {{host: echo}}
"""
ECHO = "echo.default.svc.cluster.local"
REVIEWS_CLUSTER = "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total"
PASSTHROUGH = "cluster.PassthroughCluster.upstream_cx_total"


def _mesh(*config: str, mode: str = "REDIRECT", reviews_ip: str = PEER_IP,
          ipv6: bool = False, extra: tuple[Service, ...] = ()) -> tuple[MeshSnapshot, ProxyView]:
    """The pod (productpage, captured in `mode`) and reviews behind ClusterIP 10.96.0.12 with its one endpoint in
    the peer namespace (at `reviews_ip`); `ipv6`: an IPv6-only mesh (pod fd77::1, peer fd77::2, IPv6 ClusterIPs)."""
    pod, peer = (POD_IP6, PEER_IP6) if ipv6 else (POD_IP, reviews_ip)
    services = [service("productpage"), service("reviews", addresses=(CLUSTER_IP6 if ipv6 else CLUSTER_IP,)),
                service("echo", ports=((ECHO_PORT, "UNKNOWN"),),  # protocol not declared
                        addresses=(ECHO_IP6 if ipv6 else ECHO_IP,)),
                service("egress", ports=((8080, "TCP"),), addresses=("10.96.0.14",)),  # an egress proxy's stand-in
                *extra]
    workloads = [workload("productpage-v1-0", pod, app="productpage", version="v1"),
                 workload("reviews-v1-0", peer, app="reviews", version="v1"),
                 workload("echo-v1-0", PEER_IP6 if ipv6 else PEER_IP, app="echo", version="v1"),
                 workload("egress-0", PEER_IP, app="egress")]
    proxy = dataclasses.replace(sidecar(name="productpage-v1-0", ip=pod, app_ports={9080: 9080}),
                                metadata=MappingProxyType({"INTERCEPTION_MODE": mode}))
    return make_snapshot(resources(REVIEWS_VS, ECHO_VS, *config), services, workloads), proxy


def _bootstrap(tmp_path: pathlib.Path, admin: int, *config: str, mode: str = "REDIRECT",
               reviews_ip: str = PEER_IP, ipv6: bool = False, extra: tuple[Service, ...] = ()) -> pathlib.Path:
    snapshot, proxy = _mesh(*config, mode=mode, reviews_ip=reviews_ip, ipv6=ipv6, extra=extra)
    return write_bootstrap(tmp_path, static_bootstrap(snapshot, proxy, admin))


def test_envoy_validates_captured_outbound_config(tmp_path: pathlib.Path) -> None:
    path = _bootstrap(tmp_path, free_port())
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


def _run(path: pathlib.Path, mode: str = "REDIRECT", *flags: str, ipv6: bool = False) -> dict[str, Any]:
    # exactly the injected istio-init's: -p 15001 -u 1337 -m MODE
    args = iptables_args({"sidecar.istio.io/interceptionMode": mode}, InjectionConfig())
    assert args[args.index("-p") + 1] == "15001" and args[args.index("-u") + 1] == "1337"
    assert args[args.index("-m") + 1] == mode
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": PATH, "OUTBOUND_NETNS_IPV6": "1" if ipv6 else ""}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.outbound_netns", *flags, str(path),
                           "15000", "--", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result (rc {done.returncode}): {done.stderr[-3000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in got, got
    return got


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_captured_app_reaches_a_cluster_ip_through_envoy_and_unknown_destinations_pass_through(
        tmp_path: pathlib.Path, mode: str) -> None:
    """Both interception modes (TPROXY: outbound is still nat REDIRECT to 15001, virtualOutbound transparent,
    Envoy as root in group 1337)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, mode=mode), mode)  # in the private namespace: no other Envoy there
    svc = got["service"]
    assert svc.get("status") == 200, got
    # the VirtualService's route answered (its response header), through Envoy's outbound HCM, to the endpoint
    assert svc["headers"].get(ROUTE_HEADER) == "reviews-vs" and svc["headers"].get("server") == "envoy"
    body = json.loads(svc["body"])
    assert body["app"] == "reviews" and body["peer"] == POD_IP
    after = got["stats_after_service"]
    assert after[REVIEWS_CLUSTER] == 1 and after["listener.0.0.0.0_9080.downstream_cx_total"] == 1, after
    assert after[PASSTHROUGH] == 0
    # no listener for the peer's 8080: the catch-all chain sends it to its original destination
    assert got["passthrough"].get("listener") == "peer-8080", got
    assert got["stats_after_passthrough"][PASSTHROUGH] == 1
    # the proxy's own connection (UID 1337) goes straight out, not through Envoy
    assert got["proxy_own"].get("listener") == "peer-8080" and got["proxy_own"]["uid"] == 1337, got  # UID and GID
    assert got["stats_after_proxy_own"][PASSTHROUGH] == 1
    # HTTP to a host no route names, on a port with an HTTP listener: Istio's allow_any route, PassthroughCluster
    unknown = got["http_unknown_host"]
    assert unknown.get("status") == 200 and unknown["headers"].get("server") == "envoy", got
    assert ROUTE_HEADER not in unknown["headers"] and got["stats_after_http_unknown_host"][PASSTHROUGH] == 2
    names = {s["name"] for s in got["listeners"]["listener_statuses"]}
    assert {"virtualOutbound", "0.0.0.0_9080", "virtualInbound"} <= names


def test_registry_only_closes_unknown_destinations_but_not_the_proxys_own(tmp_path: pathlib.Path) -> None:
    """outboundTrafficPolicy REGISTRY_ONLY (a Sidecar here): the catch-all chain goes to BlackHoleCluster, so the
    app's connection to the peer's 8080 is closed unanswered, while the service still answers and the proxy's own
    (UID 1337) connection still leaves uncaptured."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, REGISTRY_ONLY))
    assert got["service"].get("status") == 200, got
    assert "listener" not in got["passthrough"], got
    after = got["stats_after_passthrough"]
    assert after["cluster.BlackHoleCluster.upstream_cx_none_healthy"] == 1 and after[PASSTHROUGH] == 0, after
    assert got["proxy_own"].get("listener") == "peer-8080", got
    assert got["http_unknown_host"].get("status") == 502, got  # Istio's block_all route


def test_a_port_without_a_declared_protocol_is_sniffed_http_routed_and_raw_tcp_passed(tmp_path: pathlib.Path) -> None:
    """Istio's protocol sniffing (ListenerProtocolAuto): the echo service's 7070 declares no protocol, so its listener
    on the ClusterIP inspects each connection: an HTTP request takes the HTTP chain (the VirtualService's header
    route answers with its response header; one request on the HTTP chain), a raw TCP line on the same port takes
    the TCP chain (echoed back; the HCM would have answered 400), both on the echo cluster."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000))
    sniffed = got["sniffed_http"]
    assert sniffed.get("status") == 200, got
    assert sniffed["headers"].get(ROUTE_HEADER) == "echo-header-route", sniffed
    assert json.loads(sniffed["body"]) == {"app": "echo", "method": "GET", "path": "/sniffed"}
    assert got["sniffed_raw"].get("answer") == "raw:ping-raw-tcp\n", got
    after = got["stats_after_sniffed"]
    assert after[f"http.outbound_{ECHO_IP}_{ECHO_PORT}.downstream_rq_total"] == 1, after
    assert after[f"tcp.outbound|{ECHO_PORT}||{ECHO}.downstream_cx_total"] == 1, after  # the TCP chain, once
    assert after[f"cluster.outbound|{ECHO_PORT}||{ECHO}.upstream_cx_total"] == 2, after


def _egress_on_echo_port(capture_mode: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress:
  - port: {{number: {ECHO_PORT}, protocol: HTTP, name: http}}
    captureMode: {capture_mode}
    hosts: ["./*"]
  - hosts: ["./*"]
"""


@pytest.mark.parametrize(("capture_mode", "through_envoy"), [("IPTABLES", True), ("DEFAULT", True), ("NONE", False)])
def test_sidecar_egress_capture_mode_decides_what_takes_captured_traffic(
        tmp_path: pathlib.Path, capture_mode: str, through_envoy: bool) -> None:
    """Istio's Sidecar egress captureMode in a captured pod: IPTABLES or DEFAULT, the egress listener on 7070 binds
    nothing and takes what iptables redirects (the app's HTTP call to the peer's 7070 is answered through Envoy's
    HCM: `server: envoy`, the outbound class's name, allow_any); NONE binds it on 127.0.0.1, so the captured call
    to the peer passes through as TCP, untouched (the echo server's own answer)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, _egress_on_echo_port(capture_mode)))
    echo = got["peer_echo"]
    assert echo.get("status") == 200, got
    assert json.loads(echo["body"])["path"] == "/egress-listener"
    assert (echo["headers"].get("server") == "envoy") is through_envoy, echo


SUBNETS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subnets, namespace: default}
spec:
  hosts: [subnet-db]
  tcp:
  - match: [{destinationSubnets: [10.99.0.0/16]}]
    route: [{destination: {host: subnet-db}}]
  - match: [{destinationSubnets: [10.77.0.2/32]}]
    route: [{destination: {host: egress}}]
  - route: [{destination: {host: subnet-db}}]
"""


def test_destination_subnets_route_by_the_original_destination_address(tmp_path: pathlib.Path) -> None:
    """VirtualService `tcp` match destinationSubnets (Istio's runtime predicate: a filter chain with prefix_ranges
    on the listener of a TCP service without a VIP, `0.0.0.0_8080` here): the app's connection to the peer's 8080
    is captured, and of the routes for 10.99.0.0/16 and 10.77.0.2/32 the second takes it (the egress service,
    whose endpoint is the peer's 8080 listener); the others lead to subnet-db, which has no endpoint."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, SUBNETS_VS, extra=(service("subnet-db", ports=((8080, "TCP"),)),)))
    assert got["passthrough"].get("listener") == "peer-8080", got
    after = got["stats_after_passthrough"]
    assert after[EGRESS] == 1 and after[PASSTHROUGH] == 0, after


EGRESS_PROXY = egress_proxy_sidecar("egress.default.svc.cluster.local", 8080)
EGRESS = "cluster.outbound|8080||egress.default.svc.cluster.local.upstream_cx_total"


def test_sidecar_egress_proxy_receives_the_unknown_destinations(tmp_path: pathlib.Path) -> None:
    """Istio's Sidecar outboundTrafficPolicy.egressProxy (ALLOW_ANY): the app's connection to a destination no
    listener takes goes to the egress proxy's cluster (here the peer's 8080 listener, behind the egress service),
    not PassthroughCluster, and so does an HTTP request for an unknown host (allow_any)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, EGRESS_PROXY))
    assert got["service"].get("status") == 200, got
    assert got["passthrough"].get("listener") == "peer-8080", got
    after = got["stats_after_passthrough"]
    assert after[EGRESS] == 1 and after[PASSTHROUGH] == 0, after
    assert got["stats_after_http_unknown_host"][EGRESS] == 2, got
    assert got["stats_after_http_unknown_host"][PASSTHROUGH] == 0, got


def test_envoy_validates_an_ipv6_only_captured_pods_config(tmp_path: pathlib.Path) -> None:
    """An IPv6-only pod's captured config (virtual listeners on `::`, `::_PORT` listeners, ::6 passthrough source)
    is accepted by Envoy as it is."""
    snapshot, proxy = _mesh()
    proxy = dataclasses.replace(proxy, ip="fd00::77:1")
    path = write_bootstrap(tmp_path, static_bootstrap(snapshot, proxy, free_port()))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert '"::_9080"' in path.read_text() or "::_9080" in path.read_text()


def test_an_ipv6_only_pod_reaches_services_by_their_ipv6_cluster_ips(tmp_path: pathlib.Path) -> None:
    """An IPv6-only pod (Istio's getWildcardsAndLocalHost for GetIPMode IPv6; istio-iptables finds the pod's IPv6
    address and writes the rules with ip6tables): the app's GET to reviews' IPv6 ClusterIP goes through
    `[::]:15001` (virtualOutbound) to the `::_9080` listener and the VirtualService's route, reaching the endpoint
    from the pod's IPv6 address; the sniffed echo port routes HTTP by its header route and echoes a raw TCP line;
    a connection to the peer's 8080 (no listener) passes through (ORIGINAL_DST) and the proxy's own does not."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(_bootstrap(tmp_path, 15000, ipv6=True), ipv6=True)
    svc = got["service"]
    assert svc.get("status") == 200, got
    assert svc["headers"].get(ROUTE_HEADER) == "reviews-vs" and svc["headers"].get("server") == "envoy"
    assert json.loads(svc["body"]) == {"app": "reviews", "peer": POD_IP6}
    assert got["stats_after_service"][REVIEWS_CLUSTER] == 1 and got["stats_after_service"][PASSTHROUGH] == 0
    assert got["passthrough"].get("listener") == "peer-8080" and got["stats_after_passthrough"][PASSTHROUGH] == 1
    assert got["proxy_own"].get("listener") == "peer-8080" and got["stats_after_proxy_own"][PASSTHROUGH] == 1
    sniffed = got["sniffed_http"]
    assert sniffed.get("status") == 200 and sniffed["headers"].get(ROUTE_HEADER) == "echo-header-route", got
    assert got["sniffed_raw"].get("answer") == "raw:ping-raw-tcp\n", got
    names = {s["name"] for s in got["listeners"]["listener_statuses"]}
    assert {"virtualOutbound", "::_9080", f"{ECHO_IP6}_{ECHO_PORT}"} <= names, names


AUDIT_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10}
      http: {h2UpgradePolicy: UPGRADE, http2KeepAlive: {interval: 10s, timeout: 3s}}
    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 60s, attributes: [{name: SameSite, value: Lax}]}}}
    retryBudget: {percent: {value: 35}, minRetryConcurrency: 4}
    outlierDetection: {consecutive5xxErrors: 3, outlierDetectionHttpErrorCodes: [500, 503]}
"""
AUDIT_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-audit, namespace: default}
spec:
  hosts: [productpage]
  http:
  - match: [{uri: {prefix: /old}, statPrefix: old-api}]
    redirect: {prefixRewrite: /new, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /raw}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - route: [{destination: {host: productpage}}]
    retries: {attempts: 2, backoff: 100ms, retryIgnorePreviousHosts: false}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], unmatchedPreflights: IGNORE}
"""


def test_envoy_accepts_the_fields_the_audit_translated(tmp_path: pathlib.Path) -> None:
    """Real Envoy (`--mode validate`) takes what the session-12 audit added: retryBudget and the outlier error
    matcher on a cluster, a route's stat_prefix, a prefix-rewriting redirect on the request port, direct-response
    bytes, retry backoff without the previous_hosts predicate, CORS forward_not_matching_preflights, cookie hash
    attributes, HTTP/2 connection keepalive."""
    path = _bootstrap(tmp_path, free_port(), AUDIT_DR, AUDIT_VS)
    text = path.read_text()
    for field in ("old-api", "retryBudget", "errorMatcher", "connectionKeepalive", "SameSite"):
        assert field in text, field
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
