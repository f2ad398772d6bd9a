"""Services from core Service and ServiceEntry resources; Istio's protocol selection rules."""

from __future__ import annotations

import pathlib

import pytest

from sailmesh.api.parse import load_file, parse_text
from sailmesh.api.resource import Resource
from sailmesh.registry import protocol
from sailmesh.registry.services import build_index, service_from_kube, services_from_entry
from sailmesh.settings import MeshDefaults
from tests.conftest import ROOT

MESH = MeshDefaults()


def conformance_dir() -> pathlib.Path:
    """Istio's conformance data next to the checkout (main) or two levels up (a helper's worktree)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "conformance").is_dir():
            return base / "shared" / "conformance"
    pytest.skip("Istio conformance data not found")


def one(text: str) -> Resource:
    r = parse_text(text)
    assert not r.errors, r.errors
    return r.resources[0]


# Istio's protocol selection (istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/,
# code: pkg/config/kube ConvertProtocol): appProtocol first, then the port name `<protocol>[-<suffix>]`,
# "grpc-web" before the generic prefix split; unnamed/unknown -> auto-detection (UNKNOWN) except the
# well-known server-first ports; UDP transport is UDP.
@pytest.mark.parametrize(
    ("port", "name", "app_protocol", "transport", "expected"),
    [
        (9080, "http", None, "TCP", "HTTP"),
        (9080, "http-web", None, "TCP", "HTTP"),
        (9080, "HTTP", None, "TCP", "HTTP"),  # case-insensitive
        (9080, "http2", None, "TCP", "HTTP2"),
        (9080, "grpc", None, "TCP", "GRPC"),
        (9080, "grpc-web", None, "TCP", "GRPC_WEB"),
        (9080, "grpc-web-ui", None, "TCP", "GRPC_WEB"),
        (443, "https", None, "TCP", "HTTPS"),
        (443, "tls-passthrough", None, "TCP", "TLS"),
        (9000, "tcp", None, "TCP", "TCP"),
        (27017, "mongo", None, "TCP", "MONGO"),
        (6379, "redis", None, "TCP", "REDIS"),
        (3306, "mysql", None, "TCP", "MYSQL"),
        (9080, "", None, "TCP", "UNKNOWN"),  # unnamed: protocol sniffing
        (9080, "web", None, "TCP", "UNKNOWN"),  # unknown prefix: protocol sniffing
        (9080, "httpx", None, "TCP", "UNKNOWN"),  # a prefix is the text before '-', not a string prefix
        (3306, "", None, "TCP", "TCP"),  # well-known port: detection disabled
        (25, "smtp", None, "TCP", "TCP"),
        (9080, "tcp", "http", "TCP", "HTTP"),  # appProtocol beats the name
        (9080, "http", "grpc", "TCP", "GRPC"),
        (9080, "", "kubernetes.io/h2c", "TCP", "HTTP2"),
        (9080, "", "kubernetes.io/ws", "TCP", "HTTP"),
        (9080, "", "kubernetes.io/wss", "TCP", "HTTPS"),
        (53, "dns", None, "UDP", "UDP"),
    ],
)
def test_protocol_selection(port: int, name: str, app_protocol: str | None, transport: str, expected: str) -> None:
    assert protocol.infer(port, name, app_protocol, transport) == expected


def test_bookinfo_services() -> None:
    loaded = load_file(str(conformance_dir() / "bookinfo" / "platform-kube" / "bookinfo.yaml"))
    assert not loaded.errors
    index = build_index(loaded.resources, MESH)
    services = index.services()
    names = ("details", "productpage", "ratings", "reviews")
    assert sorted(services) == [f"{n}.default.svc.cluster.local" for n in names]
    reviews = services["reviews.default.svc.cluster.local"]
    assert reviews.name == "reviews" and reviews.namespace == "default"
    assert [(p.port, p.name, p.protocol, p.target_port) for p in reviews.ports] == [(9080, "http", "HTTP", 0)]
    assert dict(reviews.selector or {}) == {"app": "reviews"}
    assert reviews.resolution == "STATIC" and not reviews.mesh_external and reviews.export_to == ("*",)
    assert reviews.origin == "Service default/reviews"


def test_service_details_named_target_exportto_external_name() -> None:
    svc = service_from_kube(
        one("""
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {networking.istio.io/exportTo: ".,istio-system"}
spec:
  clusterIP: 10.0.0.7
  selector: {app: web}
  ports:
  - {name: http-main, port: 80, targetPort: web-port}
  - {name: metrics, port: 9090, targetPort: 19090, appProtocol: http}
"""),
        MeshDefaults(domain_suffix="example.internal"),
    ).service
    assert svc.hostname == "web.shop.svc.example.internal"
    assert [(p.port, p.protocol, p.target_port, p.target_port_name) for p in svc.ports] == [
        (80, "HTTP", 0, "web-port"),
        (9090, "HTTP", 19090, ""),
    ]
    assert svc.addresses == ("10.0.0.7",) and svc.export_to == (".", "istio-system")

    ext = service_from_kube(
        one("""
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {type: ExternalName, externalName: db.example.com, ports: [{name: tcp, port: 5432}]}
"""),
        MESH,
    )
    assert ext.service.resolution == "DNS" and ext.service.mesh_external and ext.dns_name == "db.example.com"
    no_selector = service_from_kube(one("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: {}}"),
                                    MESH)
    assert no_selector.service.selector is None


def test_service_entry_per_host_and_defaults() -> None:
    loaded = load_file(str(conformance_dir() / "bookinfo" / "egress-rule-google-apis.yaml"))
    [se] = [r for r in loaded.resources if r.kind == "ServiceEntry"]
    [rec] = services_from_entry(se)
    svc = rec.service
    assert svc.hostname == "www.googleapis.com" and svc.resolution == "DNS"
    assert svc.mesh_external  # location defaults to MESH_EXTERNAL
    assert [(p.port, p.protocol) for p in svc.ports] == [(80, "HTTP"), (443, "HTTPS")]
    assert rec.dns_name == "www.googleapis.com"

    recs = services_from_entry(
        one("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: ops}
spec:
  hosts: [a.internal, b.internal]
  location: MESH_INTERNAL
  addresses: [240.0.0.1]
  exportTo: ["."]
  ports:
  - {number: 8080, name: web}   # no protocol: Istio parses "" -> auto-detect, names are not used
  - {number: 9000, name: grpc-api, protocol: grpc, targetPort: 19000}
"""),
    )
    assert [r.service.hostname for r in recs] == ["a.internal", "b.internal"]
    a = recs[0].service
    assert not a.mesh_external and a.resolution == "NONE" and a.addresses == ("240.0.0.1",) and a.export_to == (".",)
    assert [(p.port, p.protocol, p.target_port) for p in a.ports] == [(8080, "UNKNOWN", 0), (9000, "GRPC", 19000)]


def test_first_definition_of_a_host_wins() -> None:
    se = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec: {{hosts: [api.example.com], ports: [{{number: {port}, name: http, protocol: HTTP}}], resolution: DNS}}
"""
    index = build_index([one(se.format(name="first", port=80)), one(se.format(name="second", port=8080))], MESH)
    assert [p.port for p in index.services()["api.example.com"].ports] == [80]
    assert len(index.conflicts) == 1 and "ServiceEntry default/second" in index.conflicts[0]


def test_a_service_entry_whose_spec_does_not_fit_its_model_is_skipped() -> None:
    """Stores refuse such specs; config handed to the registry directly is skipped (logged), never half-read."""
    unfit = one("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unfit}
spec: {hosts: [api.example.com], ports: [{number: "80", name: http, protocol: HTTP}]}
""")
    assert services_from_entry(unfit) == []
    assert "api.example.com" not in build_index([unfit], MESH).services()
