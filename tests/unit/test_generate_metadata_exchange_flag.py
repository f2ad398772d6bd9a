"""Istio's PILOT_ENABLE_METADATA_EXCHANGE (pilot/pkg/features/telemetry.go, default true: "If true, pilot will add
metadata exchange filters, which will be consumed by telemetry filter"): false drops the HTTP metadata-exchange
filters (Istio's appendMxFilter returns early) and `istio-peer-exchange` from the mTLS ALPN lists (cluster_tls.go:
ALPNInMesh / ALPNInMeshH2 instead of their WithMxc forms; BuildInboundTLS: ALPNDownstream instead of
ALPNDownstreamWithMxc on TCP ports)."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.telemetry.standard import MX_ADD_FILTER, MX_READ_FILTER
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_mtls import HTTPBIN_CLUSTER, clusters, upstream
from tests.unit.test_generate_peer_authn import downstream, httpbin_proxy, inbound, mesh
from tests.unit.test_generate_support import generated

HCM = hcm_pb2.HttpConnectionManager


def without_mx(snapshot: MeshSnapshot) -> MeshSnapshot:
    return dataclasses.replace(snapshot, mesh=dataclasses.replace(snapshot.mesh, metadata_exchange=False))


def _filters(snapshot: MeshSnapshot) -> set[str]:
    names: set[str] = set()
    for lis in generated(snapshot, httpbin_proxy(), LISTENER, listener_pb2.Listener).values():
        for chain in lis.filter_chains:
            for f in chain.filters:
                h = HCM()
                if f.typed_config.Is(HCM.DESCRIPTOR):
                    f.typed_config.Unpack(h)
                    names.update(x.name for x in h.http_filters)
    return names


def _client_alpn(snapshot: MeshSnapshot) -> list[str]:
    c = clusters(snapshot)[HTTPBIN_CLUSTER]
    [istio] = [m for m in c.transport_socket_matches if m.transport_socket.name == "envoy.transport_sockets.tls"]
    return list(upstream(istio.transport_socket).common_tls_context.alpn_protocols)


def test_default_has_the_exchange() -> None:
    snap = mesh()
    assert {MX_READ_FILTER, MX_ADD_FILTER} <= _filters(snap)
    assert _client_alpn(snap) == ["istio-peer-exchange", "istio"]
    tcp = inbound(snap, port=9000)
    assert list(downstream(tcp.filter_chains[0]).common_tls_context.alpn_protocols) == [
        "istio-peer-exchange", "h2", "http/1.1"]


def test_flag_off_drops_the_filters_and_the_alpn() -> None:
    snap = without_mx(mesh())
    assert not {MX_READ_FILTER, MX_ADD_FILTER} & _filters(snap)
    assert _client_alpn(snap) == ["istio"]
    tcp = inbound(snap, port=9000)
    assert list(downstream(tcp.filter_chains[0]).common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    http = inbound(snap, port=8000)  # HTTP ports advertise h2 / http/1.1 either way
    assert list(downstream(http.filter_chains[0]).common_tls_context.alpn_protocols) == ["h2", "http/1.1"]


@pytest.mark.parametrize(("value", "expected"), [("", True), ("false", False), ("0", False), ("true", True),
                                                 ("nonsense", True)])
def test_read_from_istios_variable(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("PILOT_ENABLE_METADATA_EXCHANGE", value)
    assert MeshDefaults().metadata_exchange is expected
