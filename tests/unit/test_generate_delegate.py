"""VirtualService delegation merged as Istio's pilot/pkg/model/virtualservice.go merges it (mergeHTTPRoute,
mergeHTTPMatchRequests, hasConflict, stringMatchConflict), and the routes a sidecar and a gateway get from a root
with delegates (golden file tests/unit/golden/delegate_routes.json)."""

from __future__ import annotations

import json
import os
import pathlib

import msgspec
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from sailmesh.api.models import model_of
from sailmesh.api.models.base import build
from sailmesh.api.models.networking import HTTPDirectResponse, HTTPMatchRequest, StringMatch, VirtualService
from sailmesh.generate import enforcement
from sailmesh.generate.delegate import has_conflict, merge_matches, merge_route, merged_http, string_match_conflict
from sailmesh.xds.types import ROUTE
from tests.unit.test_generate_support import (
    bookinfo,
    bookinfo_services,
    bookinfo_workloads,
    gateway_proxy,
    generated,
    make_snapshot,
    resources,
    sidecar,
)

GOLDEN = pathlib.Path(__file__).parent / "golden" / "delegate_routes.json"
REVIEWS = "reviews.default.svc.cluster.local"

ROOT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: v2-team
    match:
    - uri: {prefix: /v2}
      headers: {x-team: {exact: blue}}
    headers:
      request:
        set: {x-root: "yes"}
    timeout: 5s
    delegate: {name: reviews-v2, namespace: team}
  - name: missing
    match:
    - uri: {prefix: /gone}
    delegate: {name: nowhere}
  - route:
    - destination: {host: reviews, subset: v1}
"""

DELEGATE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-v2, namespace: team}
spec:
  http:
  - name: exact
    match:
    - uri: {exact: /v2/reviews}
      headers: {x-user: {exact: jason}}
    route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v2}
    timeout: 1s
  - name: conflicting
    match:
    - uri: {prefix: /v3}
    route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v3}
  - name: rest
    route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v3}
"""

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""


def sm(**kw: str) -> StringMatch:
    return StringMatch(**kw)


def match(**kw: object) -> HTTPMatchRequest:
    return build(HTTPMatchRequest, kw)


def test_string_match_conflict_follows_istio() -> None:
    assert not string_match_conflict(None, sm(prefix="/a"))
    assert not string_match_conflict(sm(prefix="/a"), None)
    assert not string_match_conflict(sm(prefix="/a"), sm(prefix="/a/b"))  # leaf inside root
    assert string_match_conflict(sm(prefix="/a/b"), sm(prefix="/a"))  # leaf wider than root
    assert not string_match_conflict(sm(prefix="/a"), sm(exact="/a/x"))
    assert string_match_conflict(sm(prefix="/a"), sm(exact="/b"))
    assert string_match_conflict(sm(exact="/a"), sm(prefix="/a"))  # exact root, prefix leaf
    assert not string_match_conflict(sm(exact="/a"), sm(exact="/a"))
    assert string_match_conflict(sm(exact="/a"), sm(exact="/b"))
    assert string_match_conflict(sm(regex="/a.*"), sm(prefix="/a"))  # regex on either side conflicts
    assert string_match_conflict(sm(prefix="/a"), sm(regex="/a.*"))


def test_has_conflict_on_maps_case_port_source() -> None:
    root = match(uri={"prefix": "/a"}, headers={"h": {"exact": "1"}}, port=80, sourceNamespace="ns",
                 sourceLabels={"app": "x"}, gateways=["default/gw"])
    assert not has_conflict(root, match(uri={"prefix": "/a/b"}, headers={"h": {"exact": "1"}},
                                        sourceNamespace="ns"))
    assert has_conflict(root, match(headers={"h": {"exact": "2"}}))
    assert has_conflict(root, match(ignoreUriCase=True))
    assert has_conflict(root, match(port=81))
    assert has_conflict(root, match(sourceNamespace="other"))
    assert has_conflict(root, match())  # root names a sourceNamespace: the leaf must name the same
    assert has_conflict(root, match(sourceNamespace="ns", sourceLabels={"app": "y"}))
    assert has_conflict(root, match(sourceNamespace="ns", gateways=["default/other"]))


def test_merge_matches_combines_each_fitting_pair() -> None:
    roots = (match(name="r1", uri={"prefix": "/a"}, headers={"h": {"exact": "1"}}), match(name="r2", port=80))
    leaves = (match(name="l", uri={"prefix": "/a/b"}, queryParams={"q": {"exact": "x"}}),)
    merged = merge_matches(roots, leaves)
    assert merged is not None and [m.name for m in merged] == ["r1-l", "r2-l"]
    first, second = merged
    assert first.uri == sm(prefix="/a/b") and first.headers == {"h": sm(exact="1")}
    assert first.query_params == {"q": sm(exact="x")}
    assert second.port == 80 and second.uri == sm(prefix="/a/b")
    assert merge_matches(roots[:1], (match(uri={"prefix": "/z"}),)) is None  # fits no root match: conflict
    assert merge_matches((), leaves) == leaves and merge_matches(roots, ()) == roots


def test_merge_route_inherits_unset_fields_only() -> None:
    root = model_of(resources(ROOT)[0], VirtualService).http[0]  # type: ignore[index]
    leaf = model_of(resources(DELEGATE)[0], VirtualService).http[0]  # type: ignore[index]
    merged = merge_route(root, leaf)
    assert merged is not None and merged.delegate is None
    assert merged.name == "v2-team-exact"
    assert merged.timeout == "1s"  # the delegate's own
    assert merged.headers == root.headers  # the root's, the delegate sets none
    assert merged.match is not None and merged.match[0].headers == {"x-team": sm(exact="blue"),
                                                                     "x-user": sm(exact="jason")}
    # Istio's list of inherited fields does not include directResponse
    direct = msgspec.structs.replace(root, direct_response=HTTPDirectResponse(status=418))
    assert merge_route(direct, leaf).direct_response is None  # type: ignore[union-attr]


def test_merged_http_drops_missing_and_conflicting_and_resolves_names() -> None:
    snap = bookinfo(ROOT, DELEGATE, DR)
    root = next(r for r in snap.of_kind("VirtualService") if r.name == "root")
    http = merged_http(snap, root)
    assert [h.name for h in http] == ["v2-team-exact", "v2-team-rest", None]
    # the root's own route: its short host resolved in the root's namespace
    assert http[2].route[0].destination.host == REVIEWS  # type: ignore[index,union-attr]


def test_delegate_not_exported_to_root_namespace_is_ignored() -> None:
    private = DELEGATE.replace("spec:\n", "spec:\n  exportTo: ['.']\n", 1)
    snap = bookinfo(ROOT, private, DR)
    root = next(r for r in snap.of_kind("VirtualService") if r.name == "root")
    assert [h.name for h in merged_http(snap, root)] == [None]


def _routes_json(snapshot, proxy, config: str, vhost: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    cfg = generated(snapshot, proxy, ROUTE, route_pb2.RouteConfiguration)[config]
    v = next(v for v in cfg.virtual_hosts if v.name == vhost)
    return [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in v.routes]


def test_sidecar_and_gateway_routes_match_golden() -> None:
    gw = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
"""
    root_gw = ROOT.replace("name: root,", "name: root-gw,").replace("hosts: [reviews]",
                                                                     "hosts: ['*']\n  gateways: [gw]")
    snap = bookinfo(ROOT, DELEGATE, DR, gw, root_gw)
    got = {"sidecar": _routes_json(snap, sidecar(), "9080", f"{REVIEWS}:9080"),
           "gateway": _routes_json(snap, gateway_proxy(), "http.8080", "*:8080")}
    if os.environ.get("SAILMESH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
    # what the golden file says, in words: the delegate's exact route first, with the root's header condition
    # and request header, its own 1s timeout; the conflicting /v3 route dropped; the root's catch-all last
    side = got["sidecar"]
    assert [r.get("name") for r in side] == ["v2-team-exact", "v2-team-rest", None]
    assert side[0]["match"]["path"] == "/v2/reviews"
    assert {h["name"] for h in side[0]["match"]["headers"]} == {"x-team", "x-user"}
    assert side[0]["route"]["cluster"] == f"outbound|9080|v2|{REVIEWS}" and side[0]["route"]["timeout"] == "1s"
    assert side[0]["request_headers_to_add"][0]["header"] == {"key": "x-root", "value": "yes"}
    assert side[1]["match"]["prefix"] == "/v2" and side[1]["route"]["timeout"] == "5s"
    assert side[2]["route"]["cluster"] == f"outbound|9080|v1|{REVIEWS}"
    # the gateway's root (bound to gw) gets the same merged routes; only the config name in the metadata differs
    assert [{k: v for k, v in r.items() if k != "metadata"} for r in got["gateway"]] == \
        [{k: v for k, v in r.items() if k != "metadata"} for r in side]


def test_delegate_change_reaches_cached_routes() -> None:
    """A changed delegate is a new object: routes memoised for the root are not reused."""
    from sailmesh.generate.generator import Generator

    gen = Generator()
    root, dr = resources(ROOT, DR)
    first = make_snapshot([root, dr, *resources(DELEGATE)], bookinfo_services(), bookinfo_workloads(), version=1)
    gen.resources(first, sidecar(), ROUTE)
    changed = make_snapshot([root, dr, *resources(DELEGATE.replace("subset: v2", "subset: v1"))],
                            bookinfo_services(), bookinfo_workloads(), version=2)
    cfg = route_pb2.RouteConfiguration()
    gen.resources(changed, sidecar(), ROUTE)["9080"].Unpack(cfg)
    v = next(v for v in cfg.virtual_hosts if v.name == f"{REVIEWS}:9080")
    assert v.routes[0].route.cluster == f"outbound|9080|v1|{REVIEWS}"


def test_delegate_is_no_longer_reported_unenforced() -> None:
    assert enforcement.not_enforced(resources(ROOT)[0]) == []
