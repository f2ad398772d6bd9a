"""Istio node ids (type~ip~name.namespace~namespace.svc.domain) and node metadata into a ProxyView."""

from __future__ import annotations

import pytest

from sailmesh.errors import XdsError
from sailmesh.snapshot.node import parse_app_ports, proxy_view_from_node


def test_sidecar_node_with_metadata() -> None:
    v = proxy_view_from_node(
        "sidecar~127.0.1.2~reviews-v1-0.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "NAME": "reviews-v1-0",
            "LABELS": {"app": "reviews", "version": "v1"},
            "SERVICE_ACCOUNT": "bookinfo-reviews",
            "APP_PORTS": "9080:41234,9443:41235",
            "PROXY_TYPE": "sidecar",
        },
    )
    assert (v.type, v.ip, v.namespace, v.workload_name, v.service_account) == (
        "sidecar", "127.0.1.2", "default", "reviews-v1-0", "bookinfo-reviews")
    assert dict(v.labels) == {"app": "reviews", "version": "v1"}
    assert dict(v.app_ports) == {9080: 41234, 9443: 41235}
    assert v.scope_key == ("sidecar", "default", (("app", "reviews"), ("version", "v1")))


def test_id_only_and_json_labels() -> None:
    # Without metadata the namespace comes from the id's pod part (name.namespace), then from the domain.
    v = proxy_view_from_node("router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local")
    assert (v.type, v.namespace, v.workload_name, v.service_account) == (
        "router", "istio-system", "istio-ingressgateway-0", "default")
    assert dict(v.labels) == {} and dict(v.app_ports) == {}
    v2 = proxy_view_from_node("sidecar~10.0.0.1~vm1~bookinfo.svc.cluster.local", {"LABELS": '{"app": "ratings"}'})
    assert v2.namespace == "bookinfo" and v2.workload_name == "vm1" and dict(v2.labels) == {"app": "ratings"}


@pytest.mark.parametrize(
    ("node_id", "metadata"),
    [
        ("sidecar~127.0.0.1~a.default", {}),  # three parts
        ("gateway~127.0.0.1~a.default~default.svc.cluster.local", {}),  # unknown type
        ("sidecar~~a.default~default.svc.cluster.local", {}),  # no IP
        ("sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"PROXY_TYPE": "router"}),  # disagree
        ("sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"LABELS": "not json"}),
        ("sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"LABELS": ["a"]}),
        ("sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"APP_PORTS": "9080:x"}),
        ("sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"APP_PORTS": "9080:70000"}),
    ],
)
def test_bad_nodes_refused(node_id: str, metadata: dict[str, object]) -> None:
    with pytest.raises(XdsError):
        proxy_view_from_node(node_id, metadata)


def test_app_ports_forms() -> None:
    assert parse_app_ports("") == {} and parse_app_ports(None) == {}
    assert parse_app_ports("9080") == {9080: 9080}  # no app port: the app listens on the container port
    assert parse_app_ports(" 80:8080 , 81:8081 ") == {80: 8080, 81: 8081}
