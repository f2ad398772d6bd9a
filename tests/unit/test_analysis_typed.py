"""Analyzers read Istio kinds through their typed models: what that means for specs that do not fit."""

from __future__ import annotations

from sailmesh.analysis import messages as msg
from sailmesh.analysis.context import Context, export_to
from sailmesh.analysis.registry import analyze, by_name
from sailmesh.api import models
from sailmesh.api.models.networking import ServiceEntry, VirtualService
from sailmesh.api.parse import parse_text


def resources(text: str):
    res = parse_text(text, "t.yaml")
    assert not res.errors
    return res.resources


def codes(text: str, *names: str) -> set[tuple[str, str]]:
    analyzers = [by_name(n) for n in names] if names else None
    return {(d.code, d.origin) for d in analyze(resources(text), {}, analyzers)}


# `port.number` must be an integer: this VirtualService does not convert to its model.
UNFIT_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unfit}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: nowhere, port: {number: eighty}}}]}]
"""


def test_a_spec_that_does_not_fit_its_model_is_reported_by_schema_validation_only():
    """As in Istio, where an object that fails to convert never reaches the other analyzers."""
    got = {c for c in codes(UNFIT_VS) if c[1] == "VirtualService default/unfit"}
    assert got == {(msg.SchemaValidationError.code, "VirtualService default/unfit")}


def test_context_model_is_none_for_an_unfit_spec_and_built_once(monkeypatch):
    vs = resources(UNFIT_VS)[0]
    ctx = Context([vs])
    builds = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda r: builds.append(r.key) or real(r))
    assert ctx.model(vs, VirtualService) is None
    assert ctx.model(vs, VirtualService) is None
    assert len(builds) == 1


def test_context_model_of_another_kind_is_none():
    se = resources("""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec: {hosts: [a.example.com], ports: [{number: 80, name: http, protocol: HTTP}], exportTo: ["."]}
""")[0]
    ctx = Context([se])
    assert ctx.model(se, VirtualService) is None
    assert isinstance(ctx.model(se, ServiceEntry), ServiceEntry)
    assert export_to(se) == ["."]
    assert [(s.host, s.port_numbers) for s in ctx.services()] == [("a.example.com", (80,))]


def test_subsets_of_a_destination_rule_that_does_not_fit_are_not_found():
    """The DestinationRule's `tls.mode` is not a string: its subsets are unreadable, so v1 is not defined."""
    text = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: unfit}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: 5}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
"""
    assert codes(text, "virtualservice.DestinationRuleAnalyzer") == {
        (msg.ReferencedResourceNotFound.code, "VirtualService default/vs")}


GATEWAY_POD = """apiVersion: v1
kind: Pod
metadata: {name: gw-pod, labels: {app: gw, gateway.networking.k8s.io/gateway-name: gw}}
"""


def test_an_empty_target_ref_reads_as_unset():
    """`targetRef: {}` names nothing, so the label selector on a Kubernetes Gateway's pods is still ineffective."""
    policy = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: %s}
spec:
  selector: {matchLabels: {app: gw}}
  %s
"""
    text = "---\n".join([GATEWAY_POD, policy % ("empty", "targetRef: {}"),
                         policy % ("named", "targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}")])
    assert codes(text, "k8sgateway.SelectorAnalyzer") == {
        (msg.IneffectiveSelector.code, "AuthorizationPolicy default/empty")}


def test_telemetry_has_no_model_and_its_selector_is_read_raw():
    text = GATEWAY_POD + """---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t}
spec: {selector: {matchLabels: {app: gw}}}
"""
    assert codes(text, "k8sgateway.SelectorAnalyzer") == {(msg.IneffectiveSelector.code, "Telemetry default/t")}
