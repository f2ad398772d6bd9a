"""proxy-config's tables from Envoy's config dump (istioctl's columns), on a dump of generated config."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format

from sailmesh.cli import envoy_dump
from sailmesh.cli.proxy_config import add_arguments, render, selected
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo,
    gateway_proxy,
    generate,
    make_snapshot,
    resources,
    service,
    sidecar,
)

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


def _dump(snap: MeshSnapshot | None = None, proxy: ProxyView | None = None) -> dict[str, Any]:
    """What Envoy's /config_dump shows for generated config (snake_case JSON, as the admin API prints it)."""
    snap, proxy = snap or bookinfo(DR, VS), proxy or sidecar()

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


def test_cluster_rows_name_the_destination_rule() -> None:
    # istioctl's DESTINATION RULE column reads the cluster's `istio.config` metadata, which Istio's cluster builder
    # sets from the DestinationRule in force (AddConfigInfoMetadata); a service without one shows "-"
    rows = envoy_dump.cluster_rows(_dump())
    reviews = {r.subset: r.destination_rule for r in rows
               if r.fqdn == "reviews.default.svc.cluster.local" and r.direction == "outbound"}
    assert reviews == {"-": "reviews.default", "v1": "reviews.default", "v2": "reviews.default"}
    ratings = [r.destination_rule for r in rows if r.fqdn == "ratings.default.svc.cluster.local"
               and r.direction == "outbound"]
    assert ratings == ["-"]


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


GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: [db.example.com], tls: {mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{match: [{port: 31400}], route: [{destination: {host: db, port: {number: 5432}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-tls, namespace: prod}
spec:
  hosts: [db.example.com]
  gateways: [default/gw]
  tls:
  - match: [{port: 443, sniHosts: [db.example.com]}]
    route: [{destination: {host: db.default.svc.cluster.local, port: {number: 5432}}}]
"""


def test_listener_rows_name_the_virtual_service_of_gateway_tcp_and_tls_chains(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Istio's `istio.config` filter chain metadata (util.BuildConfigInfoMetadata) read back as NAME.NAMESPACE,
    # the form istioctl's route table shows under VIRTUAL SERVICE
    snap = make_snapshot(resources(GATEWAY), [service("db", ports=[(5432, "TCP")])])
    dump = _dump(snap, gateway_proxy("127.0.0.9"))
    rows = {r[1]: r for r in envoy_dump.listener_rows(dump)}
    assert rows["31400"][2:] == ("ALL", "Cluster: outbound|5432||db.default.svc.cluster.local", "0.0.0.0_31400",
                                 "tcp-echo.default")
    assert rows["8443"][2:] == ("SNI: db.example.com", "Cluster: outbound|5432||db.default.svc.cluster.local",
                                "0.0.0.0_443", "db-tls.prod")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    render("listener", parser.parse_args(["listener", "gw", "--port", "31400"]), dump, {})
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ADDRESSES", "PORT", "MATCH", "DESTINATION", "VIRTUAL", "SERVICE"]
    assert row.split() == ["127.0.0.9", "31400", "ALL", "Cluster:", "outbound|5432||db.default.svc.cluster.local",
                           "tcp-echo.default"]


def test_listener_match_in_istioctls_words() -> None:
    match = {"transport_protocol": "tls", "server_names": ["a.example"], "destination_port": 9080,
             "application_protocols": ["istio-peer-exchange", "istio"]}
    listener = {"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                "filter_chains": [{"filter_chain_match": match}, {}]}
    dump = {"configs": [{"@type": ADMIN + "ListenersConfigDump", "static_listeners": [{"listener": listener}]}]}
    assert [r[2] for r in envoy_dump.listener_rows(dump)] == [
        "ALL", "SNI: a.example; Trans: tls; App: TCP TLS; Addr: *:9080"]


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


def test_json_output_with_a_filter_is_the_selected_resources() -> None:
    # istioctl proxy-config cluster P --fqdn F -o json prints the clusters the filter selects, not the whole dump
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dump = _dump()
    args = parser.parse_args(["cluster", "p", "--fqdn", "reviews.default.svc.cluster.local", "--subset", "v2",
                              "-o", "json"])
    assert [c["name"] for c in selected(args, dump, {})] == ["outbound|9080|v2|reviews.default.svc.cluster.local"]
    args = parser.parse_args(["listener", "p", "--port", "15001", "-o", "yaml"])
    assert [li["name"] for li in selected(args, dump, {})] == ["virtualOutbound"]
    args = parser.parse_args(["route", "p", "--name", "http_proxy", "-o", "json"])
    assert [rc["name"] for rc in selected(args, dump, {})] == ["http_proxy"]
    unfiltered = selected(parser.parse_args(["cluster", "p", "-o", "json"]), dump, {})
    assert unfiltered["@type"].endswith("ClustersConfigDump")  # no filter: the section's dump, as before
