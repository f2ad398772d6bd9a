"""Istio's default mesh config traces: `enableTracing: true` and DefaultProxyConfig's tracer, Zipkin at
`zipkin.istio-system:9411`, sampled at PILOT_TRACE_SAMPLING (1%). A mesh config's `defaultConfig` is applied field by
field, `tracing` whole (so `tracing: {}` is how Istio's Zipkin task turns the legacy tracer off)."""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api import meshconfig
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.telemetry.tracing import dns_name
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo, generated, service, sidecar

DEFAULT_CLUSTER = "tracing|9411||zipkin.istio-system"


def snap(mesh: meshconfig.MeshConfig = meshconfig.DEFAULT_MESH_CONFIG) -> MeshSnapshot:
    return dataclasses.replace(bookinfo(), mesh_config=mesh)


def outbound_hcm(s: MeshSnapshot) -> hcm_pb2.HttpConnectionManager:
    f = generated(s, sidecar(), LISTENER, listener_pb2.Listener)["virtualOutbound"].filter_chains[0].filters[0]
    h = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(h)
    return h


def test_the_default_mesh_config_has_istios_zipkin_tracer() -> None:
    """Istio's DefaultMeshConfig: EnableTracing true; DefaultProxyConfig: Tracing.Zipkin.Address
    zipkin.istio-system:9411; sampling PILOT_TRACE_SAMPLING 1%."""
    mc = meshconfig.DEFAULT_MESH_CONFIG
    assert mc.enable_tracing and mc.default_config.tracing is not None
    assert mc.default_config.tracing.zipkin == meshconfig.ZipkinAddress(address="zipkin.istio-system:9411")
    h = outbound_hcm(snap())
    assert h.tracing.provider.name == "envoy.tracers.zipkin" and h.tracing.random_sampling.value == 1.0
    zc = zipkin_pb2.ZipkinConfig()
    assert h.tracing.provider.typed_config.Unpack(zc)
    assert zc.collector_service.http_uri.cluster == DEFAULT_CLUSTER
    assert zc.collector_service.http_uri.uri == "http://zipkin.istio-system/api/v2/spans"
    assert meshconfig.from_mapping({}) == mc  # an empty mesh config file is the default


def test_a_collector_that_names_no_service_makes_no_lookups() -> None:
    """zipkin.istio-system is a Kubernetes short name: with no such service in the mesh it resolves nowhere, so its
    cluster is STATIC without endpoints (spans dropped, no DNS lookups: failing lookups would push the mesh's DNS
    server behind the system's in Envoy's resolver); once the service exists, the cluster resolves its FQDN
    (STRICT_DNS, not waiting for its first answer). Names outside the mesh's domain resolve as they are."""
    c = generated(snap(), sidecar(), CLUSTER, cluster_pb2.Cluster)[DEFAULT_CLUSTER]
    assert c.type == cluster_pb2.Cluster.STATIC and not c.load_assignment.endpoints
    with_zipkin = bookinfo()
    with_zipkin = dataclasses.replace(with_zipkin, services={
        **with_zipkin.services, "zipkin.istio-system.svc.cluster.local": service("zipkin", "istio-system",
                                                                                 ports=((9411, "HTTP"),))})
    c = generated(with_zipkin, sidecar(), CLUSTER, cluster_pb2.Cluster)[DEFAULT_CLUSTER]
    assert c.type == cluster_pb2.Cluster.STRICT_DNS
    assert c.HasField("wait_for_warm_on_init") and not c.wait_for_warm_on_init.value
    address = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("zipkin.istio-system.svc.cluster.local", 9411)
    s = snap()
    assert [dns_name(s, h) for h in ("zipkin.example.com", "reviews.default.svc.cluster.local", "reviews.default",
                                     "nothing.default", "nothing.default.svc.cluster.local", "example.com")] == [
        "zipkin.example.com", "reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", None, None,
        "example.com"]


def test_default_config_tracing_replaces_the_default_whole() -> None:
    """Istio's MergeProxyConfig applies defaultConfig over DefaultProxyConfig field by field: other fields keep the
    default tracer; `tracing: {}` (Istio's Zipkin task: "disable legacy MeshConfig tracing options") leaves no
    tracer, and so does a `tracing` that names none; `enableTracing: false` turns tracing off."""
    kept = meshconfig.from_mapping({"defaultConfig": {"drainDuration": "10s"}})
    assert kept.default_config.tracing == meshconfig.DEFAULT_PROXY_TRACING
    for tracing in ({}, {"sampling": 10}):
        off = snap(meshconfig.from_mapping({"defaultConfig": {"tracing": tracing}}))
        h = outbound_hcm(off)
        assert h.HasField("tracing") and not h.tracing.HasField("provider")  # Istio's HCM tracing, no tracer
        assert DEFAULT_CLUSTER not in generated(off, sidecar(), CLUSTER, cluster_pb2.Cluster)
    assert not outbound_hcm(snap(meshconfig.from_mapping({"enableTracing": False}))).HasField("tracing")
    assert DEFAULT_CLUSTER not in generated(snap(meshconfig.from_mapping({"enableTracing": False})), sidecar(),
                                            CLUSTER, cluster_pb2.Cluster)
