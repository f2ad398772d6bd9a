"""Istio's name table (NDS): `istio.networking.nds.v1.NameTable`, built from its .proto at import (no codegen).

The message is Istio's, field for field (pkg/dns/proto/nds.proto): a map of hostname -> NameInfo (ips, registry,
shortname, namespace, the deprecated alt_hosts) and name_info. The control plane builds it per proxy
(generate/nametable.py) and sends it on the name-table stream (controlplane/nds.py); the agent's DNS proxy
(agent/dns.py) answers from it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

NAME_TABLE_TYPE = "type.googleapis.com/istio.networking.nds.v1.NameTable"
# The stream the control plane serves it on, beside ADS on the xDS ports (DiscoveryRequest/DiscoveryResponse).
NDS_SERVICE = "sailmesh.nds.v1.NameTableDiscoveryService"
NDS_METHOD = "StreamNameTable"
NDS_FULL_METHOD = f"/{NDS_SERVICE}/{NDS_METHOD}"
# Istio's registry names (pilot/pkg/serviceregistry/provider): core Services, ServiceEntries
KUBERNETES, EXTERNAL = "Kubernetes", "External"


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="sailmesh/istio/nds.proto", package="istio.networking.nds.v1",
                                           syntax="proto3")
    label, string, msg = (descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                          descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                          descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    table = f.message_type.add(name="NameTable")
    info = table.nested_type.add(name="NameInfo")
    info.field.add(name="ips", number=1, label=repeated, type=string, json_name="ips")
    info.field.add(name="registry", number=2, label=label, type=string, json_name="registry")
    info.field.add(name="shortname", number=3, label=label, type=string, json_name="shortname")
    info.field.add(name="namespace", number=4, label=label, type=string, json_name="namespace")
    alt = info.field.add(name="alt_hosts", number=5, label=repeated, type=string, json_name="altHosts")
    alt.options.deprecated = True
    entry = table.nested_type.add(name="TableEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=label, type=string, json_name="key")
    entry.field.add(name="value", number=2, label=label, type=msg,
                    type_name=".istio.networking.nds.v1.NameTable.NameInfo", json_name="value")
    table.field.add(name="table", number=1, label=repeated, type=msg,
                    type_name=".istio.networking.nds.v1.NameTable.TableEntry", json_name="table")
    table.field.add(name="name_info", number=2, label=label, type=msg,
                    type_name=".istio.networking.nds.v1.NameTable.NameInfo", json_name="nameInfo")
    return f


def _classes() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    table: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.networking.nds.v1.NameTable"))
    return table, table.NameInfo


# Generated at import: protobuf messages with Istio's wire format (typed Any: the classes have no stubs)
NameTable, NameInfo = _classes()
