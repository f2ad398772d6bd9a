"""Istio's default mesh config has no tracer: Istio 1.22 removed DefaultProxyConfig's Zipkin tracer at
`zipkin.istio-system:9411` (upgrade notes, "Default tracing to zipkin.istio-system.svc removed"); the legacy
`defaultConfig.tracing.zipkin.address` still works when set (what `compatibilityVersion=1.21` restores), sampled at
`defaultConfig.tracing.sampling` (PILOT_TRACE_SAMPLING, 1%). `defaultConfig.tracing` is taken whole."""

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


LEGACY = meshconfig.from_mapping({"defaultConfig": {"tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}}}})


def test_the_default_mesh_config_has_no_tracer_since_istio_1_22() -> None:
    """Istio 1.22+: no default tracer; the HCM keeps its tracing block (enableTracing default true: request ids,
    sampling) without a provider, and no collector cluster is made."""
    mc = meshconfig.DEFAULT_MESH_CONFIG
    assert mc.enable_tracing and mc.default_config.tracing is None
    h = outbound_hcm(snap())
    assert h.HasField("tracing") and not h.tracing.HasField("provider")
    assert DEFAULT_CLUSTER not in generated(snap(), sidecar(), CLUSTER, cluster_pb2.Cluster)
    assert meshconfig.from_mapping({}) == mc  # an empty mesh config file is the default


def test_the_legacy_zipkin_address_when_set() -> None:
    """`defaultConfig.tracing.zipkin.address` (Istio's pre-1.22 default, set explicitly): a Zipkin tracer on every
    HCM, sampled at 1%, sending to the collector cluster by the address's host."""
    h = outbound_hcm(snap(LEGACY))
    assert h.tracing.provider.name == "envoy.tracers.zipkin" and h.tracing.random_sampling.value == 1.0
    zc = zipkin_pb2.ZipkinConfig()
    assert h.tracing.provider.typed_config.Unpack(zc)
    assert zc.collector_service.http_uri.cluster == DEFAULT_CLUSTER
    assert zc.collector_service.http_uri.uri == "http://zipkin.istio-system/api/v2/spans"


def test_a_collector_that_names_no_service_makes_no_lookups() -> None:
    """zipkin.istio-system is a Kubernetes short name: with no such service in the mesh it resolves nowhere, so its
    cluster is STATIC without endpoints (spans dropped, no DNS lookups: failing lookups would push the mesh's DNS
    server behind the system's in Envoy's resolver); once the service exists, the cluster resolves its FQDN
    (STRICT_DNS, not waiting for its first answer). Names outside the mesh's domain resolve as they are."""
    c = generated(snap(LEGACY), sidecar(), CLUSTER, cluster_pb2.Cluster)[DEFAULT_CLUSTER]
    assert c.type == cluster_pb2.Cluster.STATIC and not c.load_assignment.endpoints
    with_zipkin = snap(LEGACY)
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


def test_tracing_without_a_zipkin_address_has_no_tracer() -> None:
    """Other defaultConfig fields leave the tracer as it was; `tracing: {}` (Istio's Zipkin task: "disable legacy
    MeshConfig tracing options") or a `tracing` that names no address leaves no tracer; `enableTracing: false`
    turns tracing off, the legacy tracer too."""
    assert meshconfig.from_mapping({"defaultConfig": {"drainDuration": "10s"}}).default_config.tracing is None
    for tracing in ({}, {"sampling": 10}):
        off = snap(meshconfig.from_mapping({"defaultConfig": {"tracing": tracing}}))
        h = outbound_hcm(off)
        assert h.HasField("tracing") and not h.tracing.HasField("provider")  # Istio's HCM tracing, no tracer
        assert DEFAULT_CLUSTER not in generated(off, sidecar(), CLUSTER, cluster_pb2.Cluster)
    off = meshconfig.from_mapping({"enableTracing": False, "defaultConfig": {"tracing": {"zipkin": {
        "address": "zipkin.istio-system:9411"}}}})
    assert not outbound_hcm(snap(off)).HasField("tracing")
    assert DEFAULT_CLUSTER not in generated(snap(off), sidecar(), CLUSTER, cluster_pb2.Cluster)
