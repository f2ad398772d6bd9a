"""Policies attached to a Kubernetes Gateway API gateway by `targetRefs`, through real Envoy.

Istio's policy attachment (WorkloadPolicyMatcher.ShouldAttachPolicy; istio.io "Policy attachment" for
AuthorizationPolicy, RequestAuthentication and Telemetry): a policy whose targetRef names a `Gateway` of group
gateway.networking.k8s.io binds that Gateway's own gateway proxy, and never a sidecar. Shown on Istio's Bookinfo
with its Gateway API YAML unchanged: JWT required at `bookinfo-gateway` (no token 403, a token nobody issued 401,
a valid one 200) while productpage's own calls to reviews (sidecar to sidecar, no token) still succeed; and a
Telemetry that disables REQUEST_COUNT for the gateway only.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_bookinfo import get
from tests.e2e.test_mesh_gatewayapi import GATEWAY_API, apply, gateway_address
from tests.e2e.test_mesh_jwt import NO_PROXY, Key, status
from tests.e2e.test_mesh_metrics import istio_samples, proxies, requests_by

pytestmark = pytest.mark.e2e

ISSUER = "https://gateway-api.sailmesh.test"
TARGET = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "bookinfo-gateway"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    if not GATEWAY_API.is_dir():
        pytest.skip(f"Istio's Bookinfo Gateway API YAMLs not found at {GATEWAY_API} (needs ../shared)")
    m = RunningMesh(str(tmp_path_factory.mktemp("gwapi-policy-mesh")), demo=True, extra=["--no-routing"])
    try:
        apply(m, GATEWAY_API / "bookinfo-gateway.yaml")
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def url(mesh: RunningMesh) -> str:
    base = f"http://{gateway_address(mesh)}:8080"
    wait_for(lambda: get(base + "/productpage")[0] == 200, timeout=30, what="productpage through the Gateway")
    return base


def apply_doc(mesh: RunningMesh, tmp: Path, *docs: dict[str, object]) -> None:
    path = tmp / "policy.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    mesh.cli("apply", "-f", str(path), check=True)


def test_jwt_and_authorization_bind_the_gateway_not_the_sidecars(mesh: RunningMesh, url: str,
                                                                  tmp_path: Path) -> None:
    key, stranger = Key("gw"), Key("stranger")
    ra = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
          "metadata": {"name": "gw-jwt", "namespace": "default"},
          "spec": {"targetRefs": [TARGET], "jwtRules": [{"issuer": ISSUER, "jwks": key.jwks()}]}}
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "gw-require-jwt", "namespace": "default"},
          "spec": {"targetRefs": [TARGET], "action": "ALLOW",
                   "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}}
    apply_doc(mesh, tmp_path, ra, ap)
    page = url + "/productpage"
    good = key.sign(iss=ISSUER)
    # Istio: no token -> the ALLOW policy's requestPrincipals do not match -> 403; a token signed by a key the
    # rule does not know -> jwt_authn's 401; a valid token -> 200.
    wait_for(lambda: status(page) == 403, timeout=30, what="the gateway requiring a JWT (403 without one)")
    assert status(page, stranger.sign(iss=ISSUER)) == 401
    assert status(page, good) == 200
    # The sidecars are not bound: productpage calls reviews and ratings without any token, and the page has them.
    req = urllib.request.Request(url + "/api/v1/products/0/reviews", headers={"Authorization": "Bearer " + good})
    with NO_PROXY.open(req, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["reviews"]
    out = mesh.cli("apply", "-f", str(tmp_path / "policy.yaml"), check=True)
    assert "not enforced" not in out.stdout + out.stderr  # a Gateway targetRef is enforced, so no warning
    mesh.cli("delete", "-f", str(tmp_path / "policy.yaml"), check=True)
    wait_for(lambda: status(page) == 200, timeout=30, what="the gateway open again after the policies went")


def test_telemetry_target_ref_changes_the_gateways_metrics_only(mesh: RunningMesh, url: str,
                                                                tmp_path: Path) -> None:
    tel = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
           "metadata": {"name": "gw-no-request-count", "namespace": "default"},
           "spec": {"targetRefs": [TARGET], "metrics": [{"providers": [{"name": "prometheus"}], "overrides": [
               {"match": {"metric": "REQUEST_COUNT"}, "disabled": True}]}]}}
    apply_doc(mesh, tmp_path, tel)
    addrs = proxies(mesh)
    gateway = next(a for n, a in addrs.items() if n.startswith("bookinfo-gateway-istio"))
    productpage = next(a for n, a in addrs.items() if n.startswith("productpage"))

    def gateway_stopped_counting() -> bool:
        before = sum(requests_by(gateway).values())
        assert status(url + "/productpage") == 200
        return not before and not requests_by(gateway)
    # Each request goes through the gateway and productpage's sidecar; once the gateway's listener carries the
    # override (Istio: a disabled metric leaves the page), only the sidecar's count moves.
    wait_for(gateway_stopped_counting, timeout=30, what="the gateway's istio_requests_total gone")
    before = sum(requests_by(productpage, reporter="destination").values())
    for _ in range(5):
        assert status(url + "/productpage") == 200
    wait_for(lambda: sum(requests_by(productpage, reporter="destination").values()) >= before + 5, timeout=15,
             what="productpage's sidecar still counting")
    assert not requests_by(gateway)
    # only REQUEST_COUNT is disabled: the gateway still reports its request durations (a histogram reaches the
    # page at Envoy's next stats flush, after the counters: wait for it)
    wait_for(lambda: sum(istio_samples(gateway)["istio_request_duration_milliseconds_count"].values()) >= 5,
             timeout=15, what="the gateway's request durations")
