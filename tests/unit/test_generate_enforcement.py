"""The one list of what is accepted but not enforced: each gap named with its field, translated config says nothing."""

from __future__ import annotations

from sailmesh.api.parse import parse_text
from sailmesh.generate.enforcement import not_enforced


def notes(text: str) -> list[str]:
    [r] = parse_text(text).resources
    return not_enforced(r)


def test_fields_not_translated_are_named() -> None:
    vs = notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r]
  http:
  - {delegate: {name: d}}
  - {route: [{destination: {host: r}}], retries: {attempts: 2, retryRemoteLocalities: true}}
  tls: [{match: [{sniHosts: [r]}], route: [{destination: {host: r}}]}]
""")
    assert vs == ["VirtualService default/r: accepted, not enforced: spec.tls (TLS/SNI routes), "
                  "spec.http[0].delegate, spec.http[1].retries.retryRemoteLocalities"]
    dr = notes("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: r
  trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: true}}}
  subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}]
""")
    assert dr == ["DestinationRule default/r: accepted, not enforced: "
                  "spec.trafficPolicy.loadBalancer.localityLbSetting, "
                  "spec.subsets[0].trafficPolicy.loadBalancer.simple: PASSTHROUGH"]
    assert notes("""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: f, namespace: default}
spec: {configPatches: []}
""") == ["EnvoyFilter default/f: accepted, not enforced: EnvoyFilter patches are not applied"]


def test_translated_config_has_no_note() -> None:
    assert notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r]
  http: [{route: [{destination: {host: r, subset: v1}, weight: 90}, {destination: {host: r, subset: v2}, weight: 10}],
          retries: {attempts: 3}, timeout: 2s, fault: {abort: {httpStatus: 500, percentage: {value: 10}}}}]
""") == []
    assert notes("""apiVersion: v1
kind: Service
metadata: {name: r, namespace: default}
spec: {ports: [{port: 80}]}
""") == []
