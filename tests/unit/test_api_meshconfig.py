"""Istio's MeshConfig: defaults, providers, the file <- ConfigMap overlay, validation, and the push it causes."""

from __future__ import annotations

import pytest

from sailmesh.api import meshconfig
from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.api.validate import errors_only, validate
from sailmesh.errors import ModelError
from sailmesh.generate.affect import EVERY_TYPE, affected_types
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.snapshot.build import build
from sailmesh.store.memory import MemoryStore

MESH = """
trustDomain: example.org
accessLogFile: /dev/stdout
accessLogEncoding: JSON
discoverySelectors: [{matchLabels: {a: b}}]
defaultConfig:
  holdApplicationUntilProxyStarts: true
  tracing: {sampling: 10}
extensionProviders:
- name: ext-authz-http
  envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000, includeRequestHeadersInCheck: [x-ext-authz]}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"""


def configmap(mesh: str, name: str = "istio", namespace: str = "istio-system") -> str:
    body = "\n".join("    " + line for line in mesh.strip().splitlines())
    head = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
    return head + f"data:\n  mesh: |\n{body}\n"


def test_defaults_are_istios() -> None:
    # istio.io MeshConfig reference: trustDomain cluster.local, rootNamespace istio-system, enableTracing true,
    # enableAutoMtls true, outboundTrafficPolicy ALLOW_ANY, accessLogEncoding TEXT, no access log file.
    mc = meshconfig.from_mapping({})
    assert (mc.trust_domain, mc.root_namespace, mc.enable_tracing, mc.enable_auto_mtls) == \
        ("cluster.local", "istio-system", True, True)
    assert (mc.outbound_traffic_policy.mode, mc.access_log_encoding, mc.access_log_file) == ("ALLOW_ANY", "TEXT", "")


def test_providers_and_unmodelled_keys() -> None:
    mc = meshconfig.from_mapping(meshconfig.parse_yaml(MESH))
    authz = mc.provider("ext-authz-http")
    assert authz is not None and authz.kind == "envoyExtAuthzHttp"
    assert authz.envoy_ext_authz_http is not None and authz.envoy_ext_authz_http.port == 8000
    assert authz.envoy_ext_authz_http.include_request_headers_in_check == ("x-ext-authz",)
    assert mc.provider("zipkin") is not None and mc.provider("zipkin").kind == "zipkin"  # type: ignore[union-attr]
    assert mc.provider("nope") is None
    assert mc.default_config.tracing is not None and mc.default_config.tracing.sampling == 10
    # keys Istio defines that sailmesh does not read are kept, to be reported, not dropped
    assert mc.unmodelled == ("discoverySelectors", "defaultConfig.holdApplicationUntilProxyStarts")


@pytest.mark.parametrize(("mesh", "field"), [
    ("accessLogEncoding: XML", "accessLogEncoding"),
    ("outboundTrafficPolicy: {mode: SOMETIMES}", "outboundTrafficPolicy.mode"),
    ("extensionProviders: [{name: x, skywalking: {service: s, port: 1}}]", "extensionProviders"),
    ("enableTracing: maybe", "spec.enableTracing"),
])
def test_bad_mesh_config_names_the_field(mesh: str, field: str) -> None:
    with pytest.raises(ModelError) as e:
        meshconfig.from_mapping(meshconfig.parse_yaml(mesh), "mesh.yaml")
    assert e.value.resource == "mesh.yaml" and e.value.path == field


def test_default_config_nested_messages_are_replaced_not_merged() -> None:
    """Istio's mesh.MergeProxyConfig (pkg/config/mesh/mesh.go) applies the later document's defaultConfig with
    protomarshal.ApplyYAML, i.e. golang/protobuf's jsonpb, which unmarshals each given field into a new value
    (jsonpb/decode.go: `field := m.NewField(fd)` ... `m.Set(fd, v)`): `tracing` given again replaces the earlier
    `tracing` whole (its zipkin address is gone), the fields not given (drainDuration) stay, and only
    proxyMetadata merges key by key (mergeMap)."""
    base = {"defaultConfig": {"tracing": {"sampling": 1, "zipkin": {"address": "zipkin.istio-system:9411"}},
                              "drainDuration": "5s", "proxyMetadata": {"A": "1", "B": "1"}}}
    over = {"defaultConfig": {"tracing": {"sampling": 50}, "proxyMetadata": {"B": "2", "C": "2"}}}
    assert meshconfig.merge(base, over) == {"defaultConfig": {
        "tracing": {"sampling": 50}, "drainDuration": "5s", "proxyMetadata": {"A": "1", "B": "2", "C": "2"}}}
    mc = meshconfig.from_mapping(meshconfig.merge(base, over))
    assert mc.default_config.tracing is not None and mc.default_config.tracing.zipkin is None
    # correctProxyHeaders: a proxyHeaders field the later document leaves empty keeps the earlier one's
    headers = meshconfig.merge({"defaultConfig": {"proxyHeaders": {"server": {"disabled": True},
                                                                   "forwardedClientCert": "SANITIZE"}}},
                               {"defaultConfig": {"proxyHeaders": {"requestId": {"disabled": True},
                                                                   "forwardedClientCert": "UNDEFINED"}}})
    assert headers["defaultConfig"]["proxyHeaders"] == {
        "server": {"disabled": True}, "forwardedClientCert": "SANITIZE", "requestId": {"disabled": True}}


def test_top_level_fields_are_overrides() -> None:
    """Istio's ApplyMeshConfig: "all fields are overrides, except proxy config is a merge": a top-level message
    given again replaces the earlier one whole (a localityLbSetting with `distribute` does not keep the earlier
    `failover`), a null leaves the field as it was (jsonpb skips nulls), defaultProviders apply field by field,
    extensionProviders merge by name (the same name replaces the provider in its place, a new one is appended)
    and trustDomainAliases are the sorted union."""
    base = {"localityLbSetting": {"failover": [{"from": "r1", "to": "r2"}]}, "accessLogFile": "/tmp/a",
            "defaultProviders": {"tracing": ["a"], "metrics": ["prometheus"]},
            "extensionProviders": [{"name": "a", "zipkin": {"service": "z", "port": 1}}, {"name": "b"}],
            "trustDomainAliases": ["y.org", "x.org"]}
    over = {"localityLbSetting": {"distribute": [{"from": "r1/*", "to": {"r1/*": 100}}]}, "accessLogFile": None,
            "defaultProviders": {"tracing": ["c"]},
            "extensionProviders": [{"name": "c"}, {"name": "a", "zipkin": {"service": "z2", "port": 2}}],
            "trustDomainAliases": ["x.org", "w.org"]}
    assert meshconfig.merge(base, over) == {
        "localityLbSetting": {"distribute": [{"from": "r1/*", "to": {"r1/*": 100}}]}, "accessLogFile": "/tmp/a",
        "defaultProviders": {"tracing": ["c"], "metrics": ["prometheus"]},
        "extensionProviders": [{"name": "a", "zipkin": {"service": "z2", "port": 2}}, {"name": "b"}, {"name": "c"}],
        "trustDomainAliases": ["w.org", "x.org", "y.org"]}


def test_configmap_tracing_replaces_the_files() -> None:
    """The same rule through the layers the control plane applies (api.meshconfig.effective: the file, then the
    ConfigMap `istio`): the ConfigMap's defaultConfig.tracing replaces the file's, whose custom tags and Zipkin
    address do not survive; the file's other defaultConfig fields do."""
    file = {"defaultConfig": {"tracing": {"sampling": 5, "zipkin": {"address": "zipkin.example:9411"},
                                          "customTags": {"a": {"literal": {"value": "1"}}}},
                              "drainDuration": "7s"}}
    cm = parse_text(configmap("defaultConfig:\n  tracing: {sampling: 20}")).resources
    mc = meshconfig.effective(file, tuple(cm), "istio-system")
    tracing = mc.default_config.tracing
    assert tracing is not None and tracing.sampling == 20 and tracing.zipkin is None and tracing.custom_tags is None
    assert mc.default_config.drain_duration is not None


def test_configmap_overlays_the_file_and_a_change_pushes_everything() -> None:
    store, reg = MemoryStore(), LocalRegistry()
    first = build(None, store, reg, Change.everything(), mesh_file={"accessLogFile": "/tmp/a.log"})
    assert first.mesh_config.access_log_file == "/tmp/a.log" and first.mesh.trust_domain == "cluster.local"
    store.apply(parse_text(configmap(MESH)).resources)
    cm = next(iter(store.list("ConfigMap")))
    second = build(first, store, reg, Change.of(cm.key))
    assert second.mesh_config.access_log_file == "/dev/stdout"  # the ConfigMap wins over the file
    assert second.mesh.trust_domain == "example.org"  # the fields MeshDefaults shares follow the mesh config
    assert affected_types(Change.of(cm.key), first, second) == EVERY_TYPE
    # a ConfigMap that is not the mesh's changes nothing pushed
    store.apply(parse_text(configmap("a: b", name="other")).resources)
    other = next(r for r in store.list("ConfigMap") if r.name == "other")
    third = build(second, store, reg, Change.of(other.key))
    assert third.mesh_config is second.mesh_config
    assert affected_types(Change.of(other.key), second, third) == frozenset()


def test_a_bad_mesh_configmap_is_refused_with_the_field() -> None:
    res = parse_text(configmap("accessLogEncoding: XML")).resources[0]
    errors = list(errors_only(validate(res)))
    assert len(errors) == 1 and "data.mesh" in str(errors[0]) and "accessLogEncoding" in str(errors[0])
    ok = parse_text(configmap(MESH)).resources[0]
    assert not list(errors_only(validate(ok)))
