"""push_request for mTLS inputs: PeerAuthentication pushes listeners and clusters, DestinationRule tls pushes
clusters, and an endpoint change that brings a new service account pushes clusters (their SAN checks)."""

from __future__ import annotations

from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.generate.affect import affected_types, push_request
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry, workload_key
from sailmesh.snapshot.build import build
from sailmesh.store.memory import MemoryStore
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000}]
"""
SIDECAR = {"app": "httpbin", "security.istio.io/tlsMode": "istio"}
PA = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: foo}
spec:
  host: httpbin
  trafficPolicy: {tls: {mode: DISABLE}}
"""


def setup() -> tuple[MemoryStore, LocalRegistry]:
    store = MemoryStore()
    store.apply(parse_text(SERVICE).resources)
    reg = LocalRegistry()
    reg.register(Workload("httpbin-0", "foo", "127.0.2.1", SIDECAR, service_account="httpbin"))
    return store, reg


def test_peer_authentication_pushes_listeners_and_clusters() -> None:
    store, reg = setup()
    s1 = build(None, store, reg, Change.everything())
    change = Change(frozenset(store.apply(parse_text(PA).resources).created))
    s2 = build(s1, store, reg, change)
    assert affected_types(change, s1, s2) == {LISTENER, CLUSTER}
    req = push_request(change, s1, s2)
    assert req is not None and req.reason == "PeerAuthentication"


def test_destination_rule_tls_pushes_clusters() -> None:
    store, reg = setup()
    s1 = build(None, store, reg, Change.everything())
    change = Change(frozenset(store.apply(parse_text(DR).resources).created))
    assert CLUSTER in affected_types(change, s1, build(s1, store, reg, change))


def test_new_service_account_behind_a_service_pushes_clusters() -> None:
    store, reg = setup()
    s1 = build(None, store, reg, Change.everything())
    reg.register(Workload("httpbin-1", "foo", "127.0.2.2", SIDECAR, service_account="httpbin"))
    same = Change(frozenset({workload_key("httpbin-1", "foo")}))
    s2 = build(s1, store, reg, same)
    assert affected_types(same, s1, s2) == {ENDPOINT}  # same identity: endpoints only
    reg.register(Workload("httpbin-v2-0", "foo", "127.0.2.3", SIDECAR, service_account="httpbin-v2"))
    new = Change(frozenset({workload_key("httpbin-v2-0", "foo")}))
    s3 = build(s2, store, reg, new)
    assert affected_types(new, s2, s3) == {ENDPOINT, CLUSTER}
    # a workload without a sidecar presents no certificate: its service account is not checked
    reg.register(Workload("httpbin-legacy-0", "foo", "127.0.2.4", {"app": "httpbin"}, service_account="legacy"))
    legacy = Change(frozenset({workload_key("httpbin-legacy-0", "foo")}))
    assert affected_types(legacy, s3, build(s3, store, reg, legacy)) == {ENDPOINT}
