"""Protocol sniffing between two captured pods over mesh mutual TLS, with real Envoys on generated config in private
network namespaces (root; tests/e2e/sniffing_mtls_netns.py): the client sidecar offers Istio's `istio-http/1.1` /
`istio-h2` ALPN for what its HTTP chains sniffed (Istio's istio.alpn filter), so the server sidecar's Auto filter
chains (mTLS + istio-http/* -> HTTP) serve the request as HTTP: its HTTP AuthorizationPolicy rules apply (a path
allowed, one denied with Istio's 403), the app sees the client's SPIFFE ID in XFCC, and a gRPC call (h2c) to a port
with no declared protocol goes upstream as HTTP/2 on both sidecars (Istio's setUseDownstreamProtocol for
IsUnsupported ports). A raw TCP line on a sniffed port still takes both TCP chains (ALPN `istio-peer-exchange,
istio`). A gateway routing to the sniffed port offers Istio's `istio-http/1.1` ALPN too (Istio's ALPN filter on
gateway HCMs), so the server serves its request on the HTTP chain (XFCC names the gateway)."""

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

from sailmesh.registry.model import Workload
from sailmesh.snapshot.model import ProxyView
from sailmesh.testing.netns_capture import PEER_IP, POD_IP
from sailmesh.webhook.inject import InjectionConfig, iptables_args
from tests.conftest import ROOT
from tests.e2e.sniffing_mtls_netns import (
    ADMIN,
    ECHO_IP,
    GATEWAY_ADMIN,
    GATEWAY_PORT,
    GRPC_IP,
    GRPC_PORT,
    HTTP_PORT,
    RAW_PORT,
)
from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
from tests.e2e.test_mtls_envoy import Authority, with_static_secrets
from tests.e2e.test_redirect_envoy import PATH, _unavailable
from tests.unit.test_generate_support import gateway_proxy, make_snapshot, resources, service, sidecar

pytestmark = pytest.mark.e2e
TLS_MODE = "security.istio.io/tlsMode"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/echo"
GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
ECHO = "echo.default.svc.cluster.local"
GRPC = "grpc.default.svc.cluster.local"
POLICY = f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: echo, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/client,
                                  cluster.local/ns/istio-system/sa/istio-ingressgateway]}}}}]
    to: [{{operation: {{ports: ["{HTTP_PORT}"], paths: ["/allowed*"]}}}}]
  - to: [{{operation: {{ports: ["{RAW_PORT}", "{GRPC_PORT}"]}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-ingress, namespace: istio-system}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: echo.default.svc.cluster.local, port: {{number: {HTTP_PORT}}}}}}}]
"""


def _proxy(name: str, ip: str, app_ports: dict[int, int], app: str) -> ProxyView:
    """A sidecar with the mesh identity (tlsMode istio) declaring the injected agent's interception mode."""
    return dataclasses.replace(sidecar(name=name, ip=ip, app_ports=app_ports, app=app, version="v1",
                                       **{TLS_MODE: "istio"}),
                               metadata=MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))


def _with_identity(proxy: ProxyView) -> ProxyView:
    """A gateway holding the mesh certificate (tlsMode istio, as the injected gateway pod): it originates mesh mTLS."""
    return dataclasses.replace(proxy, labels=MappingProxyType({**proxy.labels, TLS_MODE: "istio"}))


def _bootstraps(tmp_path: pathlib.Path) -> tuple[pathlib.Path, ...]:
    services = [service("echo", ports=((HTTP_PORT, "UNKNOWN"), (RAW_PORT, "UNKNOWN")), addresses=(ECHO_IP,)),
                service("grpc", ports=((GRPC_PORT, "UNKNOWN"),), addresses=(GRPC_IP,), selector={"app": "echo"}),
                service("client", ports=((80, "HTTP"),))]
    workloads = [Workload("echo-v1-0", "default", PEER_IP, {"app": "echo", "version": "v1", TLS_MODE: "istio"},
                          service_account="echo"),
                 Workload("client-v1-0", "default", POD_IP, {"app": "client", "version": "v1", TLS_MODE: "istio"},
                          service_account="client")]
    snapshot = make_snapshot(resources(POLICY), services, workloads)
    authority = Authority()
    ports = {p: p for p in (HTTP_PORT, RAW_PORT, GRPC_PORT)}
    out = []
    for name, proxy, spiffe, admin in (
            ("client", _proxy("client-v1-0", POD_IP, {}, "client"), CLIENT_ID, ADMIN),
            ("server", _proxy("echo-v1-0", PEER_IP, ports, "echo"), SERVER_ID, ADMIN),
            ("gateway", _with_identity(gateway_proxy(POD_IP)), GATEWAY_ID, GATEWAY_ADMIN)):
        d = tmp_path / name
        d.mkdir()
        b = with_static_secrets(static_bootstrap(snapshot, proxy, admin), authority, authority.issue(spiffe))
        out.append(write_bootstrap(d, b))
    return tuple(out)


def _run(tmp_path: pathlib.Path) -> dict[str, Any]:
    client, server, gateway = _bootstraps(tmp_path)
    args = iptables_args({}, InjectionConfig())  # exactly the injected istio-init's: -m REDIRECT
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": PATH}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.sniffing_mtls_netns", str(client),
                           str(server), str(gateway), "--", *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result (rc {done.returncode}): {done.stderr[-3000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in got, got
    return got


def test_mesh_mtls_to_sniffed_ports_is_served_as_http_with_the_clients_protocol(tmp_path: pathlib.Path) -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(tmp_path)
    server, client = got["server_stats"], got["client_stats"]
    # HTTP/1.1 to a sniffed port: the server's HTTP chain over mTLS (XFCC names the client; the path rule applies)
    allowed = got["allowed"]
    assert allowed.get("status") == 200, got
    body = json.loads(allowed["body"])
    assert body["path"] == "/allowed/x"
    xfcc = body["headers"].get("x-forwarded-client-cert", "")
    assert f"URI={CLIENT_ID}" in xfcc and f"By={SERVER_ID}" in xfcc, body["headers"]
    denied = got["denied"]
    assert denied.get("status") == 403 and denied["body"] == "RBAC: access denied", got  # Istio's HTTP denial
    # the gateway's request to the sniffed port: Istio's ALPN, so the server's HTTP chain (XFCC names the gateway)
    via_gateway = got["gateway"]
    assert via_gateway.get("status") == 200, got
    assert got["gateway_stats"][f"cluster.outbound|{HTTP_PORT}||{ECHO}.tlsMode-istio.total_match_count"] == 1, got
    assert f"URI={GATEWAY_ID}" in json.loads(via_gateway["body"])["headers"].get("x-forwarded-client-cert", ""), got
    assert server[f"http.inbound_0.0.0.0_{HTTP_PORT}.downstream_rq_total"] == 3, server
    assert server.get(f"tcp.inbound|{HTTP_PORT}||.downstream_cx_total", 0) == 0, server
    assert client[f"http.outbound_{ECHO_IP}_{HTTP_PORT}.downstream_rq_total"] == 2, client
    # gRPC (h2c) on a sniffed port: HTTP/2 from the app to the client sidecar, between the sidecars, and to the app
    assert got["grpc"] == {"answer": "ping-over-h2c"}, got
    assert client[f"cluster.outbound|{GRPC_PORT}||{GRPC}.upstream_cx_http2_total"] == 1, client
    assert server[f"http.inbound_0.0.0.0_{GRPC_PORT}.downstream_rq_total"] == 1, server
    assert server[f"cluster.inbound|{GRPC_PORT}||.upstream_cx_http2_total"] == 1, server
    # a raw TCP line on a sniffed port: the TCP chain on both sides, echoed by the app
    assert got["raw"].get("answer") == "raw:ping-raw-tcp\n", got
    assert client[f"tcp.outbound|{RAW_PORT}||{ECHO}.downstream_cx_total"] == 1, client
    assert server[f"tcp.inbound|{RAW_PORT}||.downstream_cx_total"] == 1, server
