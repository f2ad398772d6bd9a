"""EnvoyFilter patches on listeners: LISTENER, LISTENER_FILTER, FILTER_CHAIN, NETWORK_FILTER, HTTP_FILTER, and the
route configurations inlined in inbound HTTP connection managers (pilot's listener_patch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import message

from sailmesh.api.envoyfilter_values import merge, merge_any, pack
from sailmesh.generate.envoyfilter.routes import patch_route_configuration
from sailmesh.generate.envoyfilter.select import MERGE_OPS, ConfigPatch, PatchSet

HCM = "envoy.filters.network.http_connection_manager"
VIRTUAL_LISTENERS = ("virtualInbound", "virtualOutbound")
T = TypeVar("T", bound=message.Message)


def _m(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def listener_matches(listener: listener_pb2.Listener, cp: ConfigPatch) -> bool:
    m = cp.listener
    if m is None:
        return True
    if m.get("name") and m.get("name") != listener.name:
        return False
    if cp.apply_to != "LISTENER" and listener.name in VIRTUAL_LISTENERS:
        return True  # the port is matched on the filter chain's destination port
    port = int(m.get("portNumber") or 0)
    return not port or listener.address.socket_address.port_value == port


def filter_chain_matches(listener: listener_pb2.Listener, fc: lc.FilterChain, cp: ConfigPatch) -> bool:
    m = cp.listener
    if m is None:
        return True
    fcm = fc.filter_chain_match
    port = int(m.get("portNumber") or 0)
    if listener.name in VIRTUAL_LISTENERS and port and fcm.destination_port.value != port:
        return False
    match = m.get("filterChain")
    if not isinstance(match, Mapping):
        return True
    if match.get("name") and match.get("name") != fc.name:
        return False
    if match.get("sni") and match.get("sni") not in fcm.server_names:
        return False
    if match.get("transportProtocol") and match.get("transportProtocol") != fcm.transport_protocol:
        return False
    if match.get("applicationProtocols"):
        wanted = str(match["applicationProtocols"]).split(",")
        if not all(p in fcm.application_protocols for p in wanted):
            return False
    dport = int(match.get("destinationPort") or 0)
    return not dport or (fcm.HasField("destination_port") and fcm.destination_port.value == dport)


def _filter_match(cp: ConfigPatch) -> Mapping[str, Any] | None:
    f = _m(_m(cp.listener).get("filterChain")).get("filter")
    return f if isinstance(f, Mapping) else None


def network_filter_matches(f: lc.Filter, cp: ConfigPatch) -> bool:
    m = _filter_match(cp)
    return m is None or m.get("name") == f.name


def _sub_filter(cp: ConfigPatch) -> Mapping[str, Any] | None:
    m = _filter_match(cp)
    s = m.get("subFilter") if m is not None else None
    return s if isinstance(s, Mapping) else None


def http_filter_matches(f: hcm_pb2.HttpFilter, cp: ConfigPatch) -> bool:
    s = _sub_filter(cp)
    return s is None or s.get("name") == f.name


def _listener_filter_matches(f: lc.ListenerFilter, cp: ConfigPatch) -> bool:
    name = _m(cp.listener).get("listenerFilter")
    return not name or name == f.name


def _clone(value: message.Message | None, cls: type[T]) -> T:
    out = cls()
    if value is not None:
        out.MergeFromString(value.SerializeToString())
    return out


def _ordered_ops(items: list[T], cp: ConfigPatch, cls: type[T], matches: Callable[[T], bool],
                 has_match: bool) -> list[T]:
    """ADD / INSERT_FIRST / INSERT_BEFORE / INSERT_AFTER / REPLACE / REMOVE of one patch on a list of filters, as
    pilot applies them (an insert relative to nothing goes first or last; REPLACE and REMOVE need a match)."""
    op = cp.operation
    at = next((i for i, x in enumerate(items) if matches(x)), -1) if has_match else -1
    if op == "ADD":
        return [*items, _clone(cp.value, cls)]
    if op == "INSERT_FIRST":
        return [_clone(cp.value, cls), *items]
    if op == "INSERT_AFTER":
        if not has_match:
            return [*items, _clone(cp.value, cls)]
        return items if at < 0 else [*items[:at + 1], _clone(cp.value, cls), *items[at + 1:]]
    if op == "INSERT_BEFORE":
        if not has_match:
            return [_clone(cp.value, cls), *items]
        return items if at < 0 else [*items[:at], _clone(cp.value, cls), *items[at:]]
    if op == "REPLACE" and has_match and at >= 0:
        return [*items[:at], _clone(cp.value, cls), *items[at + 1:]]
    if op == "REMOVE" and has_match:
        return [x for x in items if not matches(x)]
    return items


def _replace(container: Any, items: list[Any]) -> None:
    copies = [_clone(x, type(x)) for x in items]
    del container[:]
    container.extend(copies)


def patch_listeners(context_of: Callable[[listener_pb2.Listener], str], patches: PatchSet,
                    listeners: list[listener_pb2.Listener],
                    add_contexts: tuple[str, ...]) -> list[listener_pb2.Listener]:
    """Patch `listeners` (each in the context `context_of` gives it), then append the ADDed listeners of
    `add_contexts`; returns the new list."""
    out = []
    for lis in listeners:
        if _patch_listener(context_of(lis), patches, lis):
            out.append(lis)
    for context in add_contexts:
        for cp in patches.of("LISTENER"):
            if cp.operation != "ADD" or not cp.context_matches(context):
                continue
            if cp.context == "ANY" and context not in ("SIDECAR_OUTBOUND", "GATEWAY"):
                continue
            out.append(_clone(cp.value, listener_pb2.Listener))
    return out


def _patch_listener(context: str, patches: PatchSet, lis: listener_pb2.Listener) -> bool:
    """Patch one listener in place; False when a patch removes it."""
    for cp in patches.of("LISTENER"):
        if not (cp.context_matches(context) and listener_matches(lis, cp)):
            continue
        if cp.operation == "REMOVE":
            return False
        if cp.operation in MERGE_OPS and cp.value is not None:
            merge(lis, cp.value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
    _patch_listener_filters(context, patches, lis)
    chains = [fc for fc in lis.filter_chains if _patch_filter_chain(context, patches, lis, fc)]
    for cp in patches.of("FILTER_CHAIN"):
        if cp.operation == "ADD" and cp.context_matches(context) and listener_matches(lis, cp):
            chains.append(_clone(cp.value, lc.FilterChain))
    if len(chains) != len(lis.filter_chains) or any(a is not b for a, b in zip(chains, lis.filter_chains, strict=True)):
        _replace(lis.filter_chains, chains)
    default = lis.default_filter_chain
    if lis.HasField("default_filter_chain") and not _patch_filter_chain(context, patches, lis, default):
        lis.ClearField("default_filter_chain")
    return True


def _patch_listener_filters(context: str, patches: PatchSet, lis: listener_pb2.Listener) -> None:
    for cp in patches.of("LISTENER_FILTER"):
        if not (cp.context_matches(context) and listener_matches(lis, cp)):
            continue
        has_match = bool(_m(cp.listener).get("listenerFilter"))
        if cp.operation == "MERGE":
            if has_match:
                for f in lis.listener_filters:
                    if _listener_filter_matches(f, cp) and f.HasField("typed_config") and cp.value is not None:
                        user = cp.value
                        if isinstance(user, lc.ListenerFilter) and user.HasField("typed_config"):
                            f.typed_config.CopyFrom(merge_any(f.typed_config, user.typed_config))
            continue
        def matches(f: lc.ListenerFilter, cp: ConfigPatch = cp) -> bool:
            return _listener_filter_matches(f, cp)
        items = _ordered_ops(list(lis.listener_filters), cp, lc.ListenerFilter, matches, has_match)
        _replace(lis.listener_filters, items)


def _patch_filter_chain(context: str, patches: PatchSet, lis: listener_pb2.Listener, fc: lc.FilterChain) -> bool:
    """Patch one filter chain in place; False when a patch removes it."""
    for cp in patches.of("FILTER_CHAIN"):
        if not (cp.context_matches(context) and listener_matches(lis, cp) and filter_chain_matches(lis, fc, cp)):
            continue
        if cp.operation == "REMOVE":
            return False
        if cp.operation in MERGE_OPS and isinstance(cp.value, lc.FilterChain):
            value = cp.value
            if value.HasField("transport_socket") and fc.HasField("transport_socket"):
                if value.transport_socket.name == fc.transport_socket.name:
                    fc.transport_socket.typed_config.CopyFrom(
                        merge_any(fc.transport_socket.typed_config, value.transport_socket.typed_config))
                continue
            merge(fc, value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
    _patch_network_filters(context, patches, lis, fc)
    return True


def _patch_network_filters(context: str, patches: PatchSet, lis: listener_pb2.Listener, fc: lc.FilterChain) -> None:
    items = list(fc.filters)
    changed = False
    for cp in patches.of("NETWORK_FILTER"):
        if cp.operation in MERGE_OPS:
            continue
        if not (cp.context_matches(context) and listener_matches(lis, cp) and filter_chain_matches(lis, fc, cp)):
            continue
        def matches(f: lc.Filter, cp: ConfigPatch = cp) -> bool:
            return network_filter_matches(f, cp)
        items = _ordered_ops(items, cp, lc.Filter, matches, _filter_match(cp) is not None)
        changed = True
    if changed:
        _replace(fc.filters, items)
    for f in fc.filters:
        for cp in patches.of("NETWORK_FILTER"):
            if cp.operation == "MERGE" and isinstance(cp.value, lc.Filter) and f.HasField("typed_config") and \
                    cp.context_matches(context) and listener_matches(lis, cp) and \
                    filter_chain_matches(lis, fc, cp) and network_filter_matches(f, cp):
                if cp.value.HasField("typed_config"):
                    f.typed_config.CopyFrom(merge_any(f.typed_config, cp.value.typed_config))
                if cp.value.name:
                    f.name = cp.value.name
        if f.name == HCM and f.HasField("typed_config"):
            _patch_http_connection_manager(context, patches, lis, fc, f)


def _patch_http_connection_manager(context: str, patches: PatchSet, lis: listener_pb2.Listener,
                                   fc: lc.FilterChain, f: lc.Filter) -> None:
    http_patches = [cp for cp in patches.of("HTTP_FILTER")
                    if cp.context_matches(context) and listener_matches(lis, cp) and
                    filter_chain_matches(lis, fc, cp) and network_filter_matches(f, cp)]
    inline_routes = context == "SIDECAR_INBOUND" and any(
        patches.of(a) for a in ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"))
    if not http_patches and not inline_routes:
        return
    h = hcm_pb2.HttpConnectionManager()
    if not f.typed_config.Unpack(h):
        return
    if inline_routes and h.HasField("route_config"):
        patch_route_configuration(context, patches, h.route_config)
    items = list(h.http_filters)
    for cp in http_patches:
        if cp.operation in MERGE_OPS:
            continue
        def matches(x: hcm_pb2.HttpFilter, cp: ConfigPatch = cp) -> bool:
            return http_filter_matches(x, cp)
        items = _ordered_ops(items, cp, hcm_pb2.HttpFilter, matches, _sub_filter(cp) is not None)
    if any(cp.operation not in MERGE_OPS for cp in http_patches):
        _replace(h.http_filters, items)
    for hf in h.http_filters:
        for cp in http_patches:
            if cp.operation == "MERGE" and isinstance(cp.value, hcm_pb2.HttpFilter) and \
                    hf.HasField("typed_config") and http_filter_matches(hf, cp):
                if cp.value.HasField("typed_config"):
                    hf.typed_config.CopyFrom(merge_any(hf.typed_config, cp.value.typed_config))
                if cp.value.name:
                    hf.name = cp.value.name
    f.typed_config.CopyFrom(pack(h))
