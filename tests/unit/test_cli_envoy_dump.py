"""proxy-config's tables from Envoy's config dump (istioctl's columns), on a dump of generated config."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format

from sailmesh.cli import envoy_dump
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import bookinfo, generate, sidecar

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews], http: [{match: [{uri: {prefix: /api}}], route: [{destination: {host: reviews, subset: v2}}]},
                                 {route: [{destination: {host: reviews, subset: v1}}]}]}
"""
ADMIN = "type.googleapis.com/envoy.admin.v3."


def _dump() -> dict[str, Any]:
    """What Envoy's /config_dump shows for generated config (snake_case JSON, as the admin API prints it)."""
    snap, proxy = bookinfo(DR, VS), sidecar()

    def entries(type_url: str, key: str) -> list[dict[str, Any]]:
        return [{key: json_format.MessageToDict(a, preserving_proto_field_name=True)}
                for a in generate(snap, proxy, type_url).values()]

    listeners = [{"name": e["listener"]["name"], "active_state": e}
                 for e in entries(LISTENER, "listener")]
    return {"configs": [
        {"@type": ADMIN + "ClustersConfigDump", "dynamic_active_clusters": entries(CLUSTER, "cluster")},
        {"@type": ADMIN + "ListenersConfigDump", "dynamic_listeners": listeners},
        {"@type": ADMIN + "ScopedRoutesConfigDump"},  # Envoy lists it before the RoutesConfigDump
        {"@type": ADMIN + "RoutesConfigDump", "dynamic_route_configs": entries(ROUTE, "route_config")},
    ]}


def test_cluster_rows_split_istios_cluster_names() -> None:
    rows = envoy_dump.cluster_rows(_dump())
    v2 = [r for r in rows if r.fqdn == "reviews.default.svc.cluster.local" and r.subset == "v2"]
    assert [(r.port, r.direction, r.type) for r in v2] == [("9080", "outbound", "EDS")]
    assert any(r.fqdn == "BlackHoleCluster" and r.port == "-" for r in rows)
    assert any(r.direction == "inbound" and r.port == "9080" for r in rows)


def test_route_rows_name_the_virtual_service_and_matches() -> None:
    rows = [r for r in envoy_dump.route_rows(_dump())
            if r[0] == "9080" and r[1] == "reviews.default.svc.cluster.local:9080"]
    assert [(r[3], r[4]) for r in rows] == [("/api*", "reviews.default"), ("/*", "reviews.default")]
    assert rows[0][2].startswith("reviews.default.svc.cluster.local") and "more..." in rows[0][2]


def test_listener_rows_show_where_each_chain_goes() -> None:
    rows = envoy_dump.listener_rows(_dump())
    by_port = {r[1]: r for r in rows}
    assert by_port["15001"][4] == "virtualOutbound" and by_port["15001"][3].startswith("Route: ")
    assert by_port["9080"][3] == "Inline Route: /*"


def test_secret_rows_read_the_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0xABC).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=23)).sign(key, hashes.SHA256()))
    pem = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    dump = {"configs": [{"@type": ADMIN + "SecretsConfigDump", "dynamic_active_secrets": [
        {"name": "default", "secret": {"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_bytes": pem}, "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}}}},
        {"name": "ROOTCA", "secret": {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": pem}}}},
    ]}]}
    rows = envoy_dump.secret_rows(dump)
    assert [r[:5] for r in rows] == [("default", "Cert Chain", "ACTIVE", "true", "abc"),
                                     ("ROOTCA", "CA", "ACTIVE", "true", "abc")]
    expired = envoy_dump.secret_rows(dump, now + dt.timedelta(days=2))
    assert expired[0][3] == "false"


def test_endpoint_rows_from_cluster_statuses() -> None:
    clusters = {"cluster_statuses": [{"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "host_statuses": [
        {"address": {"socket_address": {"address": "127.0.1.4", "port_value": 9080}},
         "health_status": {"eds_health_status": "HEALTHY"}},
        {"address": {"socket_address": {"address": "127.0.1.5", "port_value": 9080}},
         "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": True}}]}]}
    assert envoy_dump.endpoint_rows(clusters) == [
        ("127.0.1.4:9080", "HEALTHY", "OK", "outbound|9080|v1|reviews.default.svc.cluster.local"),
        ("127.0.1.5:9080", "HEALTHY", "FAILED", "outbound|9080|v1|reviews.default.svc.cluster.local")]


def test_proxy_status_diff_finds_what_differs_and_only_subscribed_routes() -> None:
    held = envoy_dump.dynamic_resources(_dump())
    assert envoy_dump.rds_names(held["listeners"]) == {"http_proxy"}  # the explicit proxy's one RDS name
    assert envoy_dump.differences(held["clusters"], held["clusters"], "cluster") == []
    changed = {**held["clusters"]}
    name = next(n for n in changed if n.startswith("outbound|9080|v2|reviews"))
    changed[name] = {**changed[name], "connect_timeout": "99s"}
    diff = envoy_dump.differences(held["clusters"], changed, "cluster")
    assert diff[0] == f"--- control plane cluster {name}" and any(line.startswith("+") and "99s" in line
                                                                    for line in diff)
