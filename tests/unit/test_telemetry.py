"""Telemetry API resolution (Istio's precedence), access logs (Istio's formats) and tracing on generated config."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import msgspec
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.api import meshconfig
from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate.affect import affected_types
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.store.base import sort_by_creation
from sailmesh.telemetry import access_log, resolve, standard
from sailmesh.telemetry.stats_logger import STATS_LOGGER
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo, gateway_proxy, generated, resources, service, sidecar

HCM = hcm_pb2.HttpConnectionManager
MESH = meshconfig.from_mapping(meshconfig.parse_yaml("""
extensionProviders:
- {name: zipkin, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}
- {name: otel, opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}}
- {name: json-log, envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}}
- {name: dd, envoyHttpAls: {service: als.default.svc.cluster.local, port: 9000}}
"""))


def telemetry(name: str, ns: str, spec: str, created: str = "2024-01-01T00:00:00Z") -> str:
    body = "\n".join("  " + line for line in spec.strip().splitlines())
    return (f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}, "
            f"creationTimestamp: '{created}'}}\nspec:\n{body}\n")


def eff(*docs: str, ns: str = "default", labels: dict[str, str] | None = None,
        mesh: meshconfig.MeshConfig = MESH) -> resolve.EffectiveTelemetry:
    labels = labels or {"app": "reviews", "version": "v1"}
    return resolve.effective(sort_by_creation(resources(*docs)), mesh, ns, labels)


ROOT = telemetry("mesh-default", "istio-system", """
tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10, customTags: {team: {literal: {value: a}}}}]
accessLogging: [{providers: [{name: envoy}]}]
""")


def test_mesh_namespace_workload_precedence() -> None:
    # Istio's Telemetries.Tracing: root namespace, then namespace, then workload; each set field overrides.
    ns = telemetry("ns", "default", "tracing: [{randomSamplingPercentage: 50}]")
    wl = telemetry("wl", "default", """
selector: {matchLabels: {app: reviews}}
tracing: [{providers: [{name: otel}]}]
""")
    e = eff(ROOT, ns, wl)
    assert e.applied == ("istio-system/mesh-default", "default/ns", "default/wl")
    assert e.tracing is not None
    for spec in (e.tracing.client, e.tracing.server):
        assert spec.provider is not None and spec.provider.name == "otel"
        assert spec.sampling == 50.0  # namespace over mesh
        assert spec.custom_tags == (resolve.CustomTag("team", "literal", "a"),)  # inherited from the mesh level
    # another workload of the namespace: the namespace level, the mesh's provider
    other = eff(ROOT, ns, wl, labels={"app": "ratings"})
    assert other.applied == ("istio-system/mesh-default", "default/ns")
    assert other.tracing is not None and other.tracing.client.provider.name == "zipkin"  # type: ignore[union-attr]
    # another namespace: only the mesh level
    far = eff(ROOT, ns, wl, ns="bookinfo")
    assert far.applied == ("istio-system/mesh-default",) and far.tracing.client.sampling == 10.0  # type: ignore[union-attr]


def test_oldest_namespace_wide_telemetry_wins_and_a_gateway_target_ref_binds_that_gateway_only() -> None:
    old = telemetry("old", "default", "tracing: [{randomSamplingPercentage: 1}]", "2023-01-01T00:00:00Z")
    new = telemetry("new", "default", "tracing: [{randomSamplingPercentage: 99}]", "2025-01-01T00:00:00Z")
    refs = telemetry("gw", "default", """
targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
tracing: [{randomSamplingPercentage: 7}]
""")
    e = eff(ROOT, new, old, refs)  # a sidecar: a targetRef policy never binds one (Istio's policy attachment)
    assert e.applied == ("istio-system/mesh-default", "default/old")
    assert e.tracing is not None and e.tracing.client.sampling == 1.0
    gw = eff(ROOT, new, old, refs, labels={"gateway.networking.k8s.io/gateway-name": "gw"})
    assert gw.applied == ("istio-system/mesh-default", "default/old", "default/gw")
    assert gw.tracing is not None and gw.tracing.client.sampling == 7.0
    other = eff(ROOT, new, old, refs, labels={"gateway.networking.k8s.io/gateway-name": "other"})
    assert other.applied == ("istio-system/mesh-default", "default/old")
    elsewhere = eff(ROOT, refs, ns="bookinfo", labels={"gateway.networking.k8s.io/gateway-name": "gw"})
    assert elsewhere.applied == ("istio-system/mesh-default",)  # the policy's namespace only
    assert resolve.unenforced(resources(refs)[0], MESH) == []
    svc = telemetry("svc", "default", "targetRefs: [{kind: Service, group: '', name: reviews}]")
    (line,) = resolve.unenforced(resources(svc)[0], MESH)
    assert "targetRef(s) of kind Service" in line


def test_every_matching_workload_telemetry_applies_oldest_first() -> None:
    # Istio's applicableTelemetries (since targetRefs): every workload-level Telemetry that attaches is appended,
    # oldest first, so a later one overrides what both set.
    a = telemetry("a", "default", "selector: {matchLabels: {app: reviews}}\ntracing: [{randomSamplingPercentage: 5}]",
                  "2023-01-01T00:00:00Z")
    b = telemetry("b", "default", "selector: {matchLabels: {version: v1}}\ntracing: [{randomSamplingPercentage: 9}]",
                  "2024-06-01T00:00:00Z")
    e = eff(ROOT, b, a)
    assert e.applied == ("istio-system/mesh-default", "default/a", "default/b")
    assert e.tracing is not None and e.tracing.client.sampling == 9.0


def test_tracing_modes_and_disabled_spans() -> None:
    ns = telemetry("ns", "default", "tracing: [{match: {mode: SERVER}, disableSpanReporting: true}]")
    e = eff(ROOT, ns)
    assert e.tracing is not None and e.tracing.server.disabled and not e.tracing.client.disabled


def test_no_telemetry_means_legacy_and_default_providers_apply() -> None:
    e = eff()
    assert e.tracing is None and e.access_logging is None
    mesh = msgspec.structs.replace(MESH, default_providers=meshconfig.DefaultProviders(tracing=("zipkin",),
                                                                                    access_logging=("envoy",)))
    d = eff(mesh=mesh)
    assert d.tracing is not None and d.tracing.server.provider.name == "zipkin"  # type: ignore[union-attr]
    assert [s.provider.name for s in d.logging_for(resolve.SERVER) or ()] == ["envoy"]


def test_access_logging_merge() -> None:
    # Istio's mergeLogs: the most specific level naming providers decides; `disabled` removes; filters kept.
    ns = telemetry("ns", "default", "accessLogging: [{providers: [{name: envoy}], filter: {expression: "
                                    "'response.code >= 400'}}]")
    e = eff(ROOT, ns)
    sinks = e.logging_for(resolve.CLIENT)
    assert sinks is not None and [(s.provider.name, s.filter_expression) for s in sinks] == \
        [("envoy", "response.code >= 400")]
    off = telemetry("off", "default", """
selector: {matchLabels: {app: reviews}}
accessLogging: [{match: {mode: CLIENT}, disabled: true}]
""")
    e = eff(ROOT, off)
    assert e.logging_for(resolve.CLIENT) == ()  # explicitly off on the client side
    assert [s.provider.name for s in e.logging_for(resolve.SERVER) or ()] == ["envoy"]


def test_metrics_overrides_normalized() -> None:
    # Istio's mergeMetrics: later levels' overrides on top; ALL_METRICS disabled drops the provider.
    root = telemetry("m", "istio-system", """
metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: REQUEST_COUNT, mode: CLIENT}
    tagOverrides: {request_protocol: {operation: REMOVE}, x: {value: "request.host"}}
""")
    ns = telemetry("n", "default", """
metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]
""")
    m = eff(root, ns).metrics["prometheus"]
    rc = next(o for o in m.client if o.name == "REQUEST_COUNT")
    assert rc.disabled and rc.tags == (resolve.TagOverride("request_protocol", remove=True),
                                       resolve.TagOverride("x", value="request.host"))
    assert [o.name for o in m.server] == ["REQUEST_COUNT"] and m.server[0].disabled
    off = telemetry("o", "default", "metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]")
    assert "prometheus" not in eff(root, off).metrics
    # One side only: every metric of that side disabled, the other side keeps its overrides.
    client_off = telemetry("c", "default", """
metrics: [{overrides: [{match: {metric: ALL_METRICS, mode: CLIENT}, disabled: true}], reportingInterval: 2s}]
""")
    m = eff(root, client_off).metrics["prometheus"]
    assert all(o.disabled for o in m.client) and len(m.client) == len(resolve.ISTIO_METRICS)
    assert m.server == () and m.reporting_interval == 2.0


def test_metrics_default_to_prometheus_without_default_providers() -> None:
    # Istio's default installation sets defaultProviders.metrics [prometheus]; sailmesh's default mesh config
    # behaves so: overrides without providers (as in Istio's "custom-tags" task) apply to prometheus.
    t = telemetry("t", "istio-system", """
metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENT}, tagOverrides: {x: {value: request.host}}}]}]
""")
    m = eff(t, mesh=meshconfig.from_mapping({})).metrics
    assert list(m) == ["prometheus"]
    assert m["prometheus"].client[0].tags == (resolve.TagOverride("x", value="request.host"),)
    assert list(eff(mesh=meshconfig.from_mapping({})).metrics) == ["prometheus"]


def snap(*docs: str, mesh: meshconfig.MeshConfig = MESH) -> MeshSnapshot:
    return dataclasses.replace(bookinfo(*docs), mesh_config=mesh)


def filters_of(listener: listener_pb2.Listener) -> tuple[str, object]:
    f = listener.filter_chains[0].filters[0]
    msg = HCM() if f.name.endswith("http_connection_manager") else tcp_proxy_pb2.TcpProxy()
    assert f.typed_config.Unpack(msg)
    return f.name, msg


def user_logs(msg: object) -> list[Any]:
    """The access logs the user configured (not Envoy's stats logger or the gRPC stream that Istio's standard
    metrics are counted with)."""
    return [al for al in msg.access_log  # type: ignore[attr-defined]
            if al.name not in (standard.HTTP_GRPC_LOGGER, standard.TCP_GRPC_LOGGER, STATS_LOGGER)]


def test_mesh_config_access_log_file_text_and_json() -> None:
    # Istio's EnvoyTextLogFormat and EnvoyJSONLogFormatIstio, switched by accessLogFile / accessLogEncoding.
    assert access_log.TEXT_FORMAT.startswith('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
                                             '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% ')
    text = meshconfig.from_mapping({"accessLogFile": "/dev/stdout"})
    ls = generated(snap(mesh=text), sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1"), LISTENER,
                   listener_pb2.Listener)
    assert not any(user_logs(filters_of(x)[1]) for x in generated(
        snap(), sidecar(), LISTENER, listener_pb2.Listener).values())  # no accessLogFile: no access log
    for listener in ls.values():
        _, msg = filters_of(listener)
        (al,) = user_logs(msg)
        fl = file_pb2.FileAccessLog()
        assert al.name == "envoy.access_loggers.file" and al.typed_config.Unpack(fl)
        assert fl.path == "/dev/stdout" and fl.log_format.text_format_source.inline_string == access_log.TEXT_FORMAT
    js = meshconfig.from_mapping({"accessLogFile": "/tmp/x.log", "accessLogEncoding": "JSON"})
    fl = file_pb2.FileAccessLog()
    access_log.from_mesh_config("/tmp/x.log", js).typed_config.Unpack(fl)
    labels = dict(fl.log_format.json_format)
    assert labels["response_flags"] == "%RESPONSE_FLAGS%" and labels["upstream_cluster"] == "%UPSTREAM_CLUSTER_RAW%"
    assert set(labels) == set(access_log.JSON_LABELS) and len(labels) == 24


def test_telemetry_access_log_on_gateway_and_tcp_with_cel_filter(conformance: pathlib.Path) -> None:
    tel = telemetry("mesh", "istio-system", """
accessLogging: [{providers: [{name: json-log}], filter: {expression: "response.code >= 400"}}]
""")
    s = snap(tel)
    gw = dataclasses.replace(bookinfo(conformance / "bookinfo" / "bookinfo-gateway.yaml", tel), mesh_config=MESH)
    gls = generated(gw, gateway_proxy(), LISTENER, listener_pb2.Listener)
    assert gls
    for lst in gls.values():
        (al,) = user_logs(filters_of(lst)[1])
        cel = cel_pb2.ExpressionFilter()
        assert al.filter.extension_filter.name == "envoy.access_loggers.extension_filters.cel"
        assert al.filter.extension_filter.typed_config.Unpack(cel) and cel.expression == "response.code >= 400"
        fl = file_pb2.FileAccessLog()
        al.typed_config.Unpack(fl)
        assert dict(fl.log_format.json_format) == {"code": "%RESPONSE_CODE%"}
    tcp = dataclasses.replace(s, services={**s.services, "db.default.svc.cluster.local": service(
        "db", ports=((5432, "TCP"),), selector={"app": "reviews"})})
    ls = generated(tcp, sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1"), LISTENER,
                   listener_pb2.Listener)
    tcps = [m for m in map(filters_of, ls.values()) if m[0].endswith("tcp_proxy")]
    assert tcps and all(len(user_logs(m)) == 1 for _, m in tcps)


def test_zipkin_tracing_on_hcms_with_istio_tags_and_collector_cluster() -> None:
    tel = telemetry("mesh", "istio-system", """
tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 100,
           customTags: {env: {environment: {name: POD_NAME, defaultValue: x}}, hdr: {header: {name: x-h}}}}]
""")
    proxy = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")
    ls = generated(snap(tel), proxy, LISTENER, listener_pb2.Listener)
    inbound = filters_of(ls["127.0.1.3_9080"])[1]
    outbound = filters_of(ls["virtualOutbound"])[1]
    for h in (inbound, outbound):
        assert isinstance(h, HCM)
        assert h.tracing.provider.name == "envoy.tracers.zipkin"
        zc = zipkin_pb2.ZipkinConfig()
        h.tracing.provider.typed_config.Unpack(zc)
        assert zc.collector_service.http_uri.cluster == "tracing|9411||zipkin.istio-system.svc.cluster.local"
        assert zc.collector_service.http_uri.uri == "http://zipkin.istio-system.svc.cluster.local/api/v2/spans"
        assert zc.trace_id_128bit and not zc.shared_span_context.value
        assert zc.collector_endpoint_version == zipkin_pb2.ZipkinConfig.HTTP_JSON
        assert h.tracing.random_sampling.value == 100.0 and h.tracing.overall_sampling.value == 100.0
        tags = {t.tag: t for t in h.tracing.custom_tags}
        assert tags["istio.canonical_service"].literal.value == "reviews"
        assert tags["istio.canonical_revision"].literal.value == "v1"
        assert tags["istio.namespace"].literal.value == "default"
        assert tags["istio.mesh_id"].literal.value == "cluster.local"
        assert tags["env"].environment.name == "POD_NAME" and tags["hdr"].request_header.name == "x-h"
        assert [t.tag for t in h.tracing.custom_tags] == sorted(tags)
    # Istio's inbound span name: <service host>:<port>/*
    rc = inbound.route_config.virtual_hosts[0].routes[0]
    assert rc.decorator.operation == "reviews.default.svc.cluster.local:9080/*"
    clusters = generated(snap(tel), proxy, CLUSTER, cluster_pb2.Cluster)
    c = clusters["tracing|9411||zipkin.istio-system.svc.cluster.local"]
    # no such service in this mesh: a cluster without endpoints, no DNS lookups (tracing.dns_name)
    assert c.type == cluster_pb2.Cluster.STATIC and not c.load_assignment.endpoints
    assert "tracing|9411||zipkin.istio-system.svc.cluster.local" not in generated(
        snap(), proxy, CLUSTER, cluster_pb2.Cluster)


def test_opentelemetry_grpc_and_w3c_zipkin() -> None:
    tel = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: otel}]}]")
    proxy = sidecar()
    h = filters_of(generated(snap(tel), proxy, LISTENER, listener_pb2.Listener)["virtualOutbound"])[1]
    assert isinstance(h, HCM) and h.tracing.provider.name == "envoy.tracers.opentelemetry"
    oc = opentelemetry_pb2.OpenTelemetryConfig()
    h.tracing.provider.typed_config.Unpack(oc)
    assert oc.grpc_service.envoy_grpc.cluster_name == "tracing|4317||otel-collector.observability.svc.cluster.local"
    assert oc.service_name == "productpage.default"
    assert h.tracing.random_sampling.value == 1.0  # PILOT_TRACE_SAMPLING default
    c = generated(snap(tel), proxy, CLUSTER, cluster_pb2.Cluster)[oc.grpc_service.envoy_grpc.cluster_name]
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in c.typed_extension_protocol_options  # HTTP/2
    w3c = msgspec.structs.replace(MESH, extension_providers=(meshconfig.ExtensionProvider(name="zipkin", zipkin=(
        meshconfig.Zipkin(service="127.0.0.9", port=9411, trace_context_option="USE_B3_WITH_W3C_PROPAGATION"))),))
    tz = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: zipkin}]}]")
    h = filters_of(generated(snap(tz, mesh=w3c), proxy, LISTENER, listener_pb2.Listener)["virtualOutbound"])[1]
    zc = zipkin_pb2.ZipkinConfig()
    assert isinstance(h, HCM) and h.tracing.provider.typed_config.Unpack(zc)
    assert zc.trace_context_option == zipkin_pb2.ZipkinConfig.USE_B3_WITH_W3C_PROPAGATION
    assert generated(snap(tz, mesh=w3c), proxy, CLUSTER, cluster_pb2.Cluster)[
        "tracing|9411||127.0.0.9"].type == cluster_pb2.Cluster.STATIC


def test_legacy_mesh_config_tracing() -> None:
    # No Telemetry: enableTracing (default true) keeps Istio's legacy HCM tracing with defaultConfig sampling.
    proxy = sidecar()
    mesh = meshconfig.from_mapping({"defaultConfig": {"tracing": {"sampling": 25, "zipkin": {
        "address": "zipkin.istio-system:9411"}}}})
    h = filters_of(generated(snap(mesh=mesh), proxy, LISTENER, listener_pb2.Listener)["virtualOutbound"])[1]
    assert isinstance(h, HCM) and h.tracing.random_sampling.value == 25.0
    assert h.tracing.provider.name == "envoy.tracers.zipkin"
    assert "tracing|9411||zipkin.istio-system" in generated(snap(mesh=mesh), proxy, CLUSTER, cluster_pb2.Cluster)
    off = meshconfig.from_mapping({"enableTracing": False})
    h = filters_of(generated(snap(mesh=off), proxy, LISTENER, listener_pb2.Listener)["virtualOutbound"])[1]
    assert isinstance(h, HCM) and not h.HasField("tracing")


def test_unenforced_fields_are_reported() -> None:
    t = resources(telemetry("x", "default", """
accessLogging: [{providers: [{name: dd}]}]
metrics:
- overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}, {match: {customMetric: my_count}, disabled: false},
              {match: {metric: GRPC_REQUEST_MESSAGES}, disabled: true}]
  reportingInterval: 5s
"""))[0]
    out = resolve.unenforced(t, MESH)
    assert "default/x: accessLogging[0].providers dd (kind envoyHttpAls)" in out
    # Standard-metric overrides and reportingInterval are enforced (the agent applies them): not listed.
    assert "default/x: metrics[0].overrides[1].match.customMetric (custom metrics are not defined)" in out
    assert len(out) == 2  # GRPC_REQUEST_MESSAGES is exported (istio_request_messages_total): enforced


def test_a_telemetry_change_pushes_listeners_and_clusters() -> None:
    a, b = snap(), snap(ROOT)
    change = Change(frozenset({ResourceKey("Telemetry", "istio-system", "mesh-default")}))
    assert affected_types(change, a, b) == frozenset({LISTENER, CLUSTER})


def test_json_labels_are_valid_json_operators() -> None:
    assert json.loads(json.dumps(access_log.JSON_LABELS))["method"] == "%REQ(:METHOD)%"
