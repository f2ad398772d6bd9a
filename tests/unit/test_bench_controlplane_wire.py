"""The benchmark's lean clients read responses and write requests on the wire: the same as protobuf's messages."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from bench.controlplane import wire
from bench.controlplane.clients import CDS, EDS, referenced, referenced_raw
from sailmesh.server.sotw import _names_part


def _eds_cluster(name: str, service: str = "") -> any_pb2.Any:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.service_name = service
    anyp = any_pb2.Any()
    anyp.Pack(c)
    return anyp


def test_a_response_read_on_the_wire_has_the_message_fields() -> None:
    resources = [_eds_cluster(f"c{i}", f"s{i}" if i % 2 else "") for i in range(300)]  # multi-byte lengths
    resources.append(any_pb2.Any())
    resources[-1].Pack(cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC))
    msg = discovery_pb2.DiscoveryResponse(version_info="v7", type_url=CDS, nonce="n-1", resources=resources)
    got = wire.read_response(msg.SerializeToString())
    assert (got.version, got.type_url, got.nonce) == ("v7", CDS, "n-1")
    assert [bytes(r) for r in got.resources] == [r.SerializeToString() for r in resources]
    names, part = referenced_raw(CDS, got.resources)
    assert names == tuple(f"s{i}" if i % 2 else f"c{i}" for i in range(300))  # in the response's order, as Envoy
    assert set(names) == referenced(CDS, resources)
    again, again_part = referenced_raw(CDS, wire.read_response(msg.SerializeToString()).resources)
    assert again is names and again_part is part  # one tuple and names part for every client with these names


def test_a_request_written_on_the_wire_parses_and_is_an_ack_the_server_reads_by_bytes() -> None:
    names = ("b", "a" * 200)
    node = base_pb2.Node(id="sidecar~1", cluster="bench")
    data = wire.request(EDS, "v1", "n1", wire.names_part(names), node.SerializeToString())
    assert discovery_pb2.DiscoveryRequest.FromString(data) == discovery_pb2.DiscoveryRequest(
        version_info="v1", node=node, resource_names=names, type_url=EDS, response_nonce="n1")
    ack = wire.request(EDS, "v2", "n2", wire.names_part(names))
    parsed = discovery_pb2.DiscoveryRequest.FromString(ack)
    assert parsed.SerializeToString() == ack  # field order as protobuf's (and Envoy's) serializer writes it
    assert _names_part(parsed, ack) == wire.names_part(names)  # the server's ACK-by-bytes path recognises it
    assert wire.request(CDS, "", "", b"") == discovery_pb2.DiscoveryRequest(type_url=CDS).SerializeToString()
