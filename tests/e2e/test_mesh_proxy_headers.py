"""The mesh config's `defaultConfig.proxyHeaders` through real Envoy, as istio.io's ProxyConfig reference documents
it and Istio's pilot/pkg/networking/util/proxy_headers.go builds it: the `server` header (a sidecar client sees
Envoy's `envoy`, written by its own outbound sidecar), `x-request-id`, `x-envoy-attempt-count`, the router's
`x-envoy-*` debug headers and XFCC, by default and with each one turned off or replaced."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh
from tests.e2e.traffic_support import WEB_AND_CLIENT, running

pytestmark = pytest.mark.e2e

HEADERS_OFF = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      proxyHeaders:
        forwardedClientCert: SANITIZE
        server: {value: sailmesh-test}
        requestId: {disabled: true}
        attemptCount: {disabled: true}
        envoyDebugHeaders: {disabled: true}
---
"""


@pytest.fixture(scope="module")
def default_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "headers-default", WEB_AND_CLIENT) as (m, _):
        yield m


@pytest.fixture(scope="module")
def headers_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "headers-off", HEADERS_OFF + WEB_AND_CLIENT) as (m, _):
        yield m


def _get(mesh: RunningMesh) -> tuple[int, dict[str, str], dict[str, str]]:
    """GET http://web:8000/ through the client's sidecar: status, response headers (lower-cased), and the request
    headers the web app received (lower-cased)."""
    inst = find_instance(MeshState.load(mesh.state_dir), "client", "default")
    assert inst is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": inst.env["HTTP_PROXY"]}))
    with opener.open("http://web:8000/", timeout=10) as r:
        body = json.loads(r.read())
        return r.status, {k.lower(): v for k, v in r.headers.items()}, \
            {k.lower(): v for k, v in body["headers"].items()}


def test_istios_default_headers(default_mesh: RunningMesh) -> None:
    """Istio's defaults: the client reads `server: envoy` (the outbound class keeps Envoy's name; inbound and
    gateways say istio-envoy), the app gets a request id, `x-envoy-attempt-count: 1` and XFCC with the client's
    SPIFFE URI, and the router's `x-envoy-upstream-service-time` comes back."""
    status, response, request = _get(default_mesh)
    assert status == 200
    assert response["server"] == "envoy"
    assert "x-envoy-upstream-service-time" in response
    assert request.get("x-request-id")
    assert request.get("x-envoy-attempt-count") == "1"
    xfcc = request.get("x-forwarded-client-cert", "")
    assert "URI=spiffe://cluster.local/ns/default/sa/" in xfcc and "Hash=" in xfcc and 'Subject=""' in xfcc


def test_proxy_headers_replace_and_turn_off(headers_off: RunningMesh) -> None:
    """proxyHeaders: `server.value` names both sidecars' server header; `requestId`, `attemptCount` and
    `envoyDebugHeaders` disabled leave those headers out; `forwardedClientCert: SANITIZE` removes XFCC before the
    app. Each assertion fails on a mesh that ignores proxyHeaders (the default test shows what it would see)."""
    status, response, request = _get(headers_off)
    assert status == 200
    assert response["server"] == "sailmesh-test"
    assert "x-envoy-upstream-service-time" not in response
    assert "x-request-id" not in request
    assert "x-envoy-attempt-count" not in request
    assert "x-forwarded-client-cert" not in request
