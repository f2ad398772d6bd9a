"""Typed models: every valid Istio document builds and reads back unchanged; types, defaults, immutability, errors."""

from __future__ import annotations

import msgspec
import pytest

from sailmesh.api.models import MODELS, Duration, Percent, build_model, model_of
from sailmesh.api.models.networking import DestinationRule, HTTPRoute, VirtualService
from sailmesh.api.models.security import AuthorizationPolicy
from sailmesh.api.parse import load_file, parse_text
from sailmesh.api.validate import errors_only, is_valid, validate
from sailmesh.errors import ModelError


def _plain(x: object) -> object:
    """Model output as the YAML parser gives it: lists, not tuples; str, not Duration."""
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return str(x) if isinstance(x, str) else x


def _without(spec: object, legacy: str) -> object:
    if isinstance(spec, dict):
        return {k: _without(v, legacy) for k, v in spec.items() if k != legacy}
    if isinstance(spec, list):
        return [_without(v, legacy) for v in spec]
    return spec


def test_every_valid_istio_document_builds_and_reads_back_unchanged(conformance):
    """Coverage: a field the models did not declare would be missing when the model is written back."""
    files = [*(conformance / "validation").glob("*/*.yaml"), *(conformance / "bookinfo").glob("*.yaml"),
             *(conformance / "security" / "policies").glob("*.yaml")]
    count = 0
    for f in files:
        for r in load_file(str(f)).resources:
            if r.kind not in MODELS or errors_only(validate(r)):
                continue
            back = _plain(msgspec.to_builtins(r.model, enc_hook=str))
            # websocketUpgrade: legacy, ignored by Istio (and by the models)
            assert back == _without(r.spec, "websocketUpgrade"), (f, r.key)
            count += 1
    assert count > 150


VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
      headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 5xx}
    fault: {delay: {fixedDelay: 7s, percentage: {value: 12.5}}}
    mirror: {host: mirror}
    mirrorPercentage: {value: 10}
    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], maxAge: 24h}
  - route:
    - destination: {host: reviews, subset: v1}
"""


def test_virtual_service_model_types_and_defaults():
    r = parse_text(VS, "vs.yaml").resources[0]
    assert is_valid(r)
    vs = model_of(r, VirtualService)
    assert vs is r.model  # built once per resource
    first, second = vs.http
    assert first.match[0].uri.prefix == "/api" and first.match[0].headers["end-user"].exact == "jason"
    assert first.route[0].destination.port.number == 9080
    assert first.timeout == "1.5s" and isinstance(first.timeout, Duration) and first.timeout.seconds == 1.5
    assert first.retries.per_try_timeout.seconds == 0.5 and first.retries.attempts == 3
    assert first.fault.delay.percentage == Percent(value=12.5) and first.fault.delay.fixed_delay.seconds == 7
    assert first.cors_policy.max_age.seconds == 86400
    # unset is None (the generators apply Istio's defaults), lists are tuples
    assert second.retries is None and second.route[0].weight is None
    assert vs.gateways is None and vs.export_to is None and vs.hosts == ("reviews",)


def test_destination_rule_subsets():
    text = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 100}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 2048}}}
"""
    dr = model_of(parse_text(text, "dr.yaml").resources[0], DestinationRule)
    assert dr.traffic_policy.connection_pool.tcp.max_connections == 100
    assert dr.subset("v1").labels == {"version": "v1"} and dr.subset("v3") is None
    assert dr.subset("v2").traffic_policy.load_balancer.consistent_hash.ring_hash.minimum_ring_size == 2048


def test_security_models():
    text = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/a]}}]
    to: [{operation: {methods: [GET]}}]
    when: [{key: 'request.auth.claims[iss]', values: [x]}]
"""
    ap = model_of(parse_text(text, "p.yaml").resources[0], AuthorizationPolicy)
    assert ap.action is None
    assert ap.rules[0].from_[0].source.principals == ("cluster.local/ns/default/sa/a",)


def test_models_are_frozen():
    route = HTTPRoute(timeout=Duration("1s"))
    with pytest.raises(AttributeError):
        route.timeout = None  # type: ignore[misc]


def test_kind_without_model():
    r = parse_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n", "s").resources
    assert r[0].model is None
    with pytest.raises(ModelError, match="has no VirtualService model"):
        model_of(r[0], VirtualService)


BAD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: ns1}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: heavy
"""


def test_a_spec_that_does_not_fit_raises_a_model_error_naming_the_field():
    r = parse_text(BAD, "bad.yaml").resources[0]
    with pytest.raises(ModelError) as e:
        build_model(r)
    assert e.value.resource == "VirtualService ns1/bad"
    assert e.value.path == "spec.http[0].route[0].weight"
    assert "Expected `int | null`, got `str`" in e.value.reason
    with pytest.raises(ModelError):  # the property raises the same typed error (and is not cached)
        _ = r.model


def test_a_bad_duration_is_a_model_error():
    r = parse_text(BAD.replace("      weight: heavy\n", "    timeout: soon\n"), "bad.yaml").resources[0]
    with pytest.raises(ModelError, match=r"spec.http\[0\].timeout: invalid duration 'soon'"):
        build_model(r)


def test_replace_keeps_the_built_model_while_the_spec_is_the_same():
    r = parse_text(VS, "vs.yaml").resources[0]
    built = r.model
    assert r.replace(generation=7).model is built
    other = r.replace(spec={"hosts": ["ratings"]})
    assert other.model is not built and model_of(other, VirtualService).hosts == ("ratings",)
