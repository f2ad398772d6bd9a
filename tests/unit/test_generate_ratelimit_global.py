"""RateLimit global mode: a RateLimit naming an `envoyRateLimit` extensionProvider becomes Envoy's ratelimit filter
asking that service (its domain, gRPC to the service's outbound cluster), each rule's descriptor carrying the rule's
limit through a set_metadata filter (Envoy's RateLimit.Override); the sample service counts such overrides."""

from __future__ import annotations

import asyncio
import dataclasses

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.set_metadata.v3 import set_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from envoy.type.v3 import ratelimit_unit_pb2

from sailmesh.api import meshconfig
from sailmesh.api.parse import parse_text
from sailmesh.api.validate import validate
from sailmesh.samples.ratelimit.server import RateLimitService
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_support import bookinfo, generated, service, sidecar

GLOBAL = """\
apiVersion: policy.sailmesh.io/v1alpha1
kind: RateLimit
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  provider: {name: rls}
  rules:
  - name: page
    match: {uri: {exact: /productpage}}
    limit: {requests: 5, per: 1m}
  - name: per-user
    limit: {requests: 100, per: 1h}
    key: {header: x-user}
  response: {status: 503, headers: {x-rate-limited: "true"}}
"""
MESH = meshconfig.from_mapping({"extensionProviders": [{"name": "rls", "envoyRateLimit": {
    "service": "ratelimit.default.svc.cluster.local", "port": 8081, "domain": "bookinfo", "timeout": "1s"}}]})
PRODUCTPAGE = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")


def filters(mesh: meshconfig.MeshConfig = MESH) -> list[hcm_pb2.HttpFilter]:
    snap = bookinfo(GLOBAL)
    snap = dataclasses.replace(snap, mesh_config=mesh,
                               services={**snap.services, "ratelimit.default.svc.cluster.local": service(
                                   "ratelimit", ports=((8081, "GRPC"),))})
    ls = generated(snap, PRODUCTPAGE, LISTENER, listener_pb2.Listener)
    lis = next(v for k, v in ls.items() if k != "virtualOutbound")
    f = next(f for f in lis.filter_chains[0].filters if f.name == "envoy.filters.network.http_connection_manager")
    h = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(h)
    return list(h.http_filters)


def test_global_mode_builds_the_ratelimit_filter_with_limit_overrides() -> None:
    fs = filters()
    assert [f.name for f in fs][-3:] == ["envoy.filters.http.set_metadata", "envoy.filters.http.ratelimit",
                                         "envoy.filters.http.router"]
    rl = rate_limit_pb2.RateLimit()
    assert fs[-2].typed_config.Unpack(rl)
    assert rl.domain == "bookinfo" and rl.failure_mode_deny and rl.timeout.seconds == 1
    assert rl.rate_limit_service.grpc_service.envoy_grpc.cluster_name == \
        "outbound|8081||ratelimit.default.svc.cluster.local"
    assert rl.rate_limited_status.code == 503
    assert [(h.header.key, h.header.value) for h in rl.response_headers_to_add] == [("x-rate-limited", "true")]
    # page: one action list; per-user: the keyless (no x-user header) list, then rule + header value
    assert len(rl.rate_limits) == 3
    assert [a.WhichOneof("action_specifier") for a in rl.rate_limits[2].actions] == [
        "header_value_match", "request_headers"]
    for r in rl.rate_limits:
        assert r.limit.dynamic_metadata.metadata_key.key == "sailmesh.ratelimit"
    meta = set_metadata_pb2.Config()
    assert fs[-3].typed_config.Unpack(meta)
    limits = meta.metadata[0].value
    assert dict(limits["default/productpage/page"]) == {"requests_per_unit": 5.0, "unit": "MINUTE"}
    assert dict(limits["default/productpage/per-user"]) == {"requests_per_unit": 100.0, "unit": "HOUR"}


def test_without_the_provider_in_mesh_config_the_limit_stays_local() -> None:
    names = [f.name for f in filters(meshconfig.from_mapping({}))]
    assert "envoy.filters.http.local_ratelimit" in names and "envoy.filters.http.ratelimit" not in names


def test_global_rules_need_an_rls_unit() -> None:
    text = GLOBAL.replace("per: 1m", "per: 2s").replace("requests: 100, per: 1h",
                                                          "requests: 100, per: 1h, tokensPerFill: 1")
    found = [f"{i.field}: {i.message}" for r in parse_text(text, "<t>").resources for i in validate(r)]
    assert "spec.rules[0].limit.per: with a provider must be 1s, 1m, 1h or 24h (the units of Envoy's rate-limit " \
           "service protocol)" in found
    assert any(f.startswith("spec.rules[1].limit.tokensPerFill: with a provider must equal requests") for f in found)


def test_sample_service_counts_a_descriptor_override_without_config() -> None:
    svc = RateLimitService("", [])
    d = ratelimit_pb2.RateLimitDescriptor(entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="k", value="v")])
    d.limit.requests_per_unit = 2
    d.limit.unit = ratelimit_unit_pb2.MINUTE
    req = rls_pb2.RateLimitRequest(domain="any", descriptors=[d])
    codes = [asyncio.run(svc.ShouldRateLimit(req, None)).overall_code for _ in range(3)]  # type: ignore[arg-type]
    assert codes == [rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT]


def test_analyze_reports_a_provider_the_mesh_config_lacks() -> None:
    from sailmesh.analysis.registry import analyze
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1-0, namespace: default, labels: {app: productpage}}
spec: {containers: [{name: app, image: productpage}]}
"""
    mesh = {"extensionProviders": [{"name": "rls", "envoyRateLimit": {
        "service": "ratelimit.default.svc.cluster.local", "port": 8081}}]}  # istioctl analyze --meshConfigFile

    def ist0101(config: dict[str, object]) -> list[str]:
        found = analyze(parse_text(GLOBAL + "---\n" + pod, "<t>").resources, mesh_config=config)
        return [d.origin for d in found if d.code == "IST0101"]

    assert ist0101({}) == ["RateLimit default/productpage"]
    assert ist0101(mesh) == []
