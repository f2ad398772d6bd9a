"""RateLimit (policy.sailmesh.io/v1alpha1): validation names the field; the local_ratelimit filter built for the
workloads it selects (docs/ratelimit.md)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api.parse import parse_text
from sailmesh.api.validate import validate
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_support import bookinfo, generated, sidecar

RATE_LIMIT = """\
apiVersion: policy.sailmesh.io/v1alpha1
kind: RateLimit
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  rules:
  - name: api
    match: {uri: {prefix: /api}, method: {exact: GET}}
    limit: {requests: 10, per: 1m}
  - name: per-user
    limit: {requests: 2, per: 1s, tokensPerFill: 1}
    key: {header: X-User}
  response:
    status: 503
    headers: {x-rate-limited: "true"}
"""

PRODUCTPAGE = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
REVIEWS = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")


def issues(text: str) -> list[str]:
    return [f"{i.field}: {i.message}" for r in parse_text(text, "<t>").resources for i in validate(r)]


def test_valid_rate_limit_passes_and_errors_name_the_field() -> None:
    assert issues(RATE_LIMIT) == []
    bad = RATE_LIMIT.replace("per: 1m", "per: 10ms").replace("X-User", "\"bad header\"")
    bad = bad.replace("status: 503", "status: 200")
    found = issues(bad)
    assert "spec.rules[0].limit.per: must be at least 50ms (Envoy's shortest fill interval)" in found
    assert "spec.rules[1].key.header: must be a header name" in found
    assert any(f.startswith("spec.response.status:") for f in found)
    found = issues(RATE_LIMIT.replace("requests: 10", "requests: 0").replace("prefix: /api", "regex: '('")
                   .replace("  response:", "  bogus: 1\n  response:"))
    assert "spec.rules[0].limit.requests: must be an integer from 1 to 4294967295" in found
    assert any(f.startswith("spec.rules[0].match.uri.regex: invalid regular expression") for f in found)
    assert any(f.startswith("spec.bogus: unknown field") for f in found)
    assert issues(RATE_LIMIT.replace("name: per-user", "name: api")) == \
        ["spec.rules[1].name: duplicate rule name 'api'"]


def inbound_filters(proxy) -> list[hcm_pb2.HttpFilter]:  # type: ignore[no-untyped-def]
    ls = generated(bookinfo(RATE_LIMIT), proxy, LISTENER, listener_pb2.Listener)
    lis = next(v for k, v in ls.items() if k != "virtualOutbound")
    f = next(f for f in lis.filter_chains[0].filters if f.name == "envoy.filters.network.http_connection_manager")
    h = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(h)
    return list(h.http_filters)


def test_selected_workload_gets_one_local_ratelimit_filter_before_the_router() -> None:
    filters = inbound_filters(PRODUCTPAGE)
    names = [f.name for f in filters]
    assert names[-2:] == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    cfg = local_rate_limit_pb2.LocalRateLimit()
    assert filters[-2].typed_config.Unpack(cfg)
    assert cfg.status.code == 503 and cfg.response_headers_to_add[0].header.key == "x-rate-limited"
    assert cfg.filter_enforced.default_value.numerator == 100 and not cfg.HasField("token_bucket")
    # rule api: one descriptor (rule id), its bucket; rule per-user: keyless + per header value (wildcard entry)
    entries = [[(e.key, e.value) for e in d.entries] for d in cfg.descriptors]
    assert entries == [[("sailmesh_rule", "default/productpage/api")],
                       [("sailmesh_rule", "default/productpage/per-user")],
                       [("sailmesh_rule", "default/productpage/per-user"), ("sailmesh_key", "")]]
    assert (cfg.descriptors[0].token_bucket.max_tokens, cfg.descriptors[0].token_bucket.fill_interval.seconds) == \
        (10, 60)
    assert cfg.descriptors[2].token_bucket.tokens_per_fill.value == 1
    assert cfg.max_dynamic_descriptors.value > 0
    match = cfg.rate_limits[0].actions[0].header_value_match
    assert [(h.name, h.string_match.WhichOneof("match_pattern")) for h in match.headers] == \
        [(":path", "prefix"), (":method", "exact")]
    assert cfg.rate_limits[2].actions[1].request_headers.header_name == "x-user"


def test_unselected_workload_has_no_rate_limit() -> None:
    assert "envoy.filters.http.local_ratelimit" not in [f.name for f in inbound_filters(REVIEWS)]


def test_source_principal_key_is_written_by_the_proxy_not_the_client() -> None:
    text = RATE_LIMIT.replace("key: {header: X-User}", "key: {sourcePrincipal: {}}")
    ls = generated(bookinfo(text), PRODUCTPAGE, LISTENER, listener_pb2.Listener)
    lis = next(v for k, v in ls.items() if k != "virtualOutbound")
    f = lis.filter_chains[0].filters[-1]
    h = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(h)
    names = [x.name for x in h.http_filters]
    i = names.index("envoy.filters.http.local_ratelimit")
    assert names[i - 2:i] == ["envoy.filters.http.header_mutation"] * 2 and names[i + 1] == \
        "envoy.filters.http.header_mutation"


def test_analyze_reports_a_rate_limit_selecting_no_workload() -> None:
    from sailmesh.analysis.registry import analyze
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1-0, namespace: default, labels: {app: productpage}}
spec: {containers: [{name: app, image: productpage}]}
"""
    found = [(d.code, d.origin) for d in analyze(parse_text(RATE_LIMIT + "---\n" + pod, "<t>").resources)
             if d.code == "IST0127"]
    assert found == []
    other = RATE_LIMIT.replace("app: productpage}}", "app: nothing}}")
    found = [(d.code, d.origin) for d in analyze(parse_text(other + "---\n" + pod, "<t>").resources)
             if d.code == "IST0127"]
    assert found == [("IST0127", "RateLimit default/productpage")]
