"""EnvoyFilter patch values: Istio's JSON `value` into Envoy protobufs, and Istio's merge of one message into
another."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf import any_pb2, descriptor_pool, json_format, message, message_factory

from sailmesh.errors import PatchError

# applyTo -> the message its `patch.value` is (Istio's xds.BuildXDSObjectFromStruct)
VALUE_TYPES: dict[str, type[message.Message]] = {
    "LISTENER": listener_pb2.Listener,
    "FILTER_CHAIN": listener_components_pb2.FilterChain,
    "NETWORK_FILTER": listener_components_pb2.Filter,
    "HTTP_FILTER": http_connection_manager_pb2.HttpFilter,
    "LISTENER_FILTER": listener_components_pb2.ListenerFilter,
    "ROUTE_CONFIGURATION": route_pb2.RouteConfiguration,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost,
    "HTTP_ROUTE": route_components_pb2.Route,
    "CLUSTER": cluster_pb2.Cluster,
    "EXTENSION_CONFIG": extension_pb2.TypedExtensionConfig,
    "BOOTSTRAP": bootstrap_pb2.Bootstrap,
}


def _type_urls(value: object) -> Iterator[str]:
    """Every `@type` in a JSON value (Any fields at any depth)."""
    if isinstance(value, Mapping):
        t = value.get("@type")
        if isinstance(t, str):
            yield t
        for v in value.values():
            yield from _type_urls(v)
    elif isinstance(value, list):
        for v in value:
            yield from _type_urls(v)


def ensure_type(full_name: str) -> bool:
    """Load the generated module that defines `full_name` (envoy.extensions....v3.Msg), so Any fields can name it.
    False when no installed proto package defines it."""
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        pass
    package = full_name.rpartition(".")[0]
    if not package or not all(part.isidentifier() for part in package.split(".")):
        return False
    try:
        mod = importlib.import_module(package)
        for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
    except (ImportError, ValueError):
        return False
    try:
        pool.FindMessageTypeByName(full_name)
        return True
    except KeyError:
        return False


def build_value(apply_to: str, value: object, *, strict: bool) -> message.Message:
    """The patch value as the Envoy message `apply_to` patches. `strict` (validation) refuses unknown fields, as
    Istio's validation does; generation ignores them, as pilot does. Raises PatchError naming the problem."""
    cls = VALUE_TYPES.get(apply_to)
    if cls is None:
        raise PatchError(f"applyTo {apply_to} has no patch value type")
    if not isinstance(value, Mapping):
        raise PatchError("patch value must be an object")
    for url in _type_urls(value):
        if not ensure_type(url.rpartition("/")[2]):
            raise PatchError(f"unknown type {url!r} in the patch value")
    try:
        return json_format.ParseDict(dict(value), cls(), ignore_unknown_fields=not strict)
    except (json_format.ParseError, TypeError, ValueError, AttributeError, KeyError) as e:
        raise PatchError(f"patch value is not a valid {cls.DESCRIPTOR.full_name}: {e}") from e


def unpack(a: any_pb2.Any) -> message.Message | None:
    """The message inside an Any (None: a type this process cannot load)."""
    name = a.type_url.rpartition("/")[2]
    if not ensure_type(name):
        return None
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))
    msg = cls()
    msg.ParseFromString(a.value)
    return msg


def pack(msg: message.Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg, deterministic=True)
    return a


def merge(dst: message.Message, src: message.Message, *, replace_lists: bool = False) -> None:
    """Istio's merge (pkg/proto/merge): set scalars overwrite, messages merge recursively, lists append (or are
    replaced: MERGE_AND_REPLACE_LIST), map entries replace, and a Duration is replaced whole, not merged."""
    for fd, value in src.ListFields():
        if fd.is_repeated and fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            dst_map = getattr(dst, fd.name)
            value_fd = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_fd.message_type is not None:
                    dst_map[k].Clear()
                    dst_map[k].MergeFrom(v)
                else:
                    dst_map[k] = v
        elif fd.is_repeated:
            dst_list = getattr(dst, fd.name)
            if replace_lists:
                del dst_list[:]
            if fd.message_type is not None:
                for v in value:
                    dst_list.add().MergeFrom(v)
            else:
                dst_list.extend(value)
        elif fd.message_type is not None:
            target = getattr(dst, fd.name)
            if fd.message_type.full_name == "google.protobuf.Duration":
                target.Clear()
                target.MergeFrom(value)
            else:
                if not dst.HasField(fd.name):
                    target.SetInParent()
                merge(target, value, replace_lists=replace_lists)
        else:
            setattr(dst, fd.name, value)


def merge_any(dst: any_pb2.Any, src: any_pb2.Any) -> any_pb2.Any:
    """Istio's MergeAnyWithAny: both unpacked, merged, packed again; `dst` unchanged when either cannot be read
    or the types differ."""
    a, b = unpack(dst), unpack(src)
    if a is None or b is None or a.DESCRIPTOR is not b.DESCRIPTOR:
        return dst
    merge(a, b)
    return pack(a)


def as_json(msg: message.Message) -> dict[str, Any]:
    """A message as JSON (tests, messages)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)
