"""EnvoyFilter patches on route configurations: ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE (pilot's rc_patch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from sailmesh.api.envoyfilter_values import merge
from sailmesh.generate.envoyfilter.select import MERGE_OPS, ConfigPatch, PatchSet

GATEWAY = "GATEWAY"


def _port_of(name: str) -> int:
    """The listener port a sidecar route configuration serves: `9080`, or `inbound|9080||` inline ones."""
    if name.startswith("inbound|"):
        parts = name.split("|")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return int(name) if name.isdigit() else 0


def _gateway_route_parts(name: str) -> tuple[int, str, str]:
    """(port, port name, gateway) of a gateway route configuration name: `http.8080` or
    `https.443.<port name>.<gateway name>.<namespace>` (Istio's ParseGatewayRDSRouteName)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[1].isdigit():
        port = int(parts[1])
        if parts[0] == "https" and len(parts) >= 5:
            return port, parts[2], f"{parts[-1]}/{'.'.join(parts[3:-1])}"
        return port, "", ""
    return 0, "", ""


def route_configuration_matches(context: str, config: route_pb2.RouteConfiguration, cp: ConfigPatch) -> bool:
    m = cp.route_configuration
    if m is None:
        return True
    name = str(m.get("name") or "")
    if name and name != config.name:
        return False
    port = int(m.get("portNumber") or 0)
    if context != GATEWAY:
        return not port or port == _port_of(config.name)
    route_port, port_name, gateway = _gateway_route_parts(config.name)
    if m.get("portName") and m.get("portName") != port_name:
        return False
    if m.get("gateway") and m.get("gateway") != gateway:
        return False
    return not port or port == route_port


def _vhost_match(cp: ConfigPatch) -> Mapping[str, Any] | None:
    m = cp.route_configuration
    vh = m.get("vhost") if m is not None else None
    return vh if isinstance(vh, Mapping) else None


def virtual_host_matches(vh: rc.VirtualHost, cp: ConfigPatch) -> bool:
    m = _vhost_match(cp)
    if m is None:
        return True
    name, domain = str(m.get("name") or ""), str(m.get("domainName") or "")
    return (not name or name == vh.name) and (not domain or domain in vh.domains)


def _route_match(cp: ConfigPatch) -> Mapping[str, Any] | None:
    vh = _vhost_match(cp)
    r = vh.get("route") if vh is not None else None
    return r if isinstance(r, Mapping) else None


ACTIONS = {"route": "ROUTE", "redirect": "REDIRECT", "direct_response": "DIRECT_RESPONSE"}


def route_matches(route: rc.Route, cp: ConfigPatch) -> bool:
    m = _route_match(cp)
    if m is None:
        return True
    name = str(m.get("name") or "")
    if name and name != route.name:
        return False
    action = str(m.get("action") or "ANY")
    return action == "ANY" or ACTIONS.get(route.WhichOneof("action") or "", "") == action


def _applies(context: str, config: route_pb2.RouteConfiguration, cp: ConfigPatch) -> bool:
    return cp.context_matches(context) and route_configuration_matches(context, config, cp)


def patch_route_configuration(context: str, patches: PatchSet, config: route_pb2.RouteConfiguration) -> None:
    """Apply every route-class patch to `config` in place, in Istio's order: the configuration, then each
    virtual host and its routes, then added virtual hosts."""
    for cp in patches.of("ROUTE_CONFIGURATION"):
        if cp.operation in MERGE_OPS and cp.value is not None and _applies(context, config, cp):
            merge(config, cp.value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
    vh_patches = patches.of("VIRTUAL_HOST")
    kept = []
    for vh in config.virtual_hosts:
        removed = False
        for cp in vh_patches:
            if not (_applies(context, config, cp) and virtual_host_matches(vh, cp)):
                continue
            if cp.operation == "REMOVE":
                removed = True
                break
            if cp.operation in MERGE_OPS and cp.value is not None:
                merge(vh, cp.value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
            elif cp.operation == "REPLACE" and cp.value is not None:
                vh.Clear()
                vh.MergeFrom(cp.value)
        if removed:
            continue
        _patch_routes(context, patches, config, vh)
        kept.append(vh)
    for cp in vh_patches:
        if cp.operation == "ADD" and cp.value is not None and _applies(context, config, cp):
            added = rc.VirtualHost()
            added.CopyFrom(cp.value)
            kept.append(added)
    current = list(config.virtual_hosts)
    if len(kept) != len(current) or any(a is not b for a, b in zip(kept, current, strict=True)):
        copies = [_copy(v) for v in kept]
        del config.virtual_hosts[:]
        config.virtual_hosts.extend(copies)


def _copy(vh: rc.VirtualHost) -> rc.VirtualHost:
    out = rc.VirtualHost()
    out.CopyFrom(vh)
    return out


def _patch_routes(context: str, patches: PatchSet, config: route_pb2.RouteConfiguration, vh: rc.VirtualHost) -> None:
    route_patches = patches.of("HTTP_ROUTE")
    if not route_patches:
        return
    routes: list[rc.Route] = []
    for route in vh.routes:
        keep = True
        for cp in route_patches:
            if not (_applies(context, config, cp) and virtual_host_matches(vh, cp) and route_matches(route, cp)):
                continue
            if cp.operation == "REMOVE":
                keep = False
                break
            if cp.operation in MERGE_OPS and cp.value is not None:
                merge(route, cp.value, replace_lists=cp.operation == "MERGE_AND_REPLACE_LIST")
        if keep:
            routes.append(_route_copy(route))
    for cp in route_patches:
        if cp.value is None or not (_applies(context, config, cp) and virtual_host_matches(vh, cp)):
            continue
        new = _route_copy(cp.value)
        has_match = _route_match(cp) is not None
        at = next((i for i, r in enumerate(routes) if route_matches(r, cp)), -1) if has_match else -1
        if cp.operation == "ADD":
            routes.append(new)
        elif cp.operation == "INSERT_AFTER":
            if not has_match:
                routes.append(new)
            elif at >= 0:
                routes.insert(at + 1, new)
        elif cp.operation == "INSERT_BEFORE":
            if not has_match:
                routes.insert(0, new)
            elif at >= 0:
                routes.insert(at, new)
        elif cp.operation == "INSERT_FIRST" and (not has_match or at >= 0):
            routes.insert(0, new)  # Istio puts it first whenever some route matches
    del vh.routes[:]
    vh.routes.extend(routes)


def _route_copy(route: object) -> rc.Route:
    out = rc.Route()
    out.CopyFrom(route)
    return out
