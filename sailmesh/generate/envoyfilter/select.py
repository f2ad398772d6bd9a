"""Which EnvoyFilter patches apply to a proxy, in Istio's order (PushContext.EnvoyFilters)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message

from sailmesh.api.envoyfilter_values import build_value
from sailmesh.api.resource import Resource
from sailmesh.errors import PatchError
from sailmesh.generate.memo import IdentityMemo
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE

log = logging.getLogger(__name__)

INSERT_OPS = frozenset({"INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST"})
INSERTABLE = frozenset({"HTTP_FILTER", "NETWORK_FILTER", "HTTP_ROUTE", "LISTENER_FILTER"})
MERGE_OPS = frozenset({"MERGE", "MERGE_AND_REPLACE_LIST"})
# the applyTo values whose patches change each xDS type (EXTENSION_CONFIG: its own type, `extension_configs`;
# BOOTSTRAP: Istio applies none since its BOOTSTRAP_XDS_AGENT feature was removed)
TYPE_APPLY_TO: dict[str, frozenset[str]] = {
    LISTENER: frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER",
                         # inbound route configurations are inline in the inbound listeners
                         "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"}),
    ROUTE: frozenset({"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"}),
    CLUSTER: frozenset({"CLUSTER"}),
}
# Istio's well-known proxyVersion shorthands are exact prefixes; anything else is a regular expression
MAX_PROXY_VERSION_LEN = 1024


@dataclass(frozen=True)
class ConfigPatch:
    """One configPatches entry, its value built into the Envoy message it patches."""

    origin: str  # namespace/name[index], for logs
    apply_to: str
    context: str  # ANY, SIDECAR_INBOUND, SIDECAR_OUTBOUND, GATEWAY
    operation: str
    value: message.Message | None
    listener: Mapping[str, Any] | None = None
    route_configuration: Mapping[str, Any] | None = None
    cluster: Mapping[str, Any] | None = None
    proxy: Mapping[str, Any] | None = None

    def context_matches(self, context: str) -> bool:
        return self.context in ("ANY", context)


@dataclass(frozen=True)
class PatchSet:
    """The patches that apply to one proxy, by applyTo, in order."""

    by_apply_to: Mapping[str, tuple[ConfigPatch, ...]] = field(default_factory=dict)
    sources: tuple[Resource, ...] = ()

    def of(self, apply_to: str) -> tuple[ConfigPatch, ...]:
        return self.by_apply_to.get(apply_to, ())

    def touches(self, type_url: str) -> bool:
        return any(a in self.by_apply_to for a in TYPE_APPLY_TO.get(type_url, ()))


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def compile_patches(ef: Resource) -> tuple[ConfigPatch, ...]:
    """An EnvoyFilter's patches with their values built; a patch whose value cannot be built is skipped and
    logged, as pilot does (validation refuses such values before they get here)."""
    out = []
    for i, cp in enumerate(ef.spec.get("configPatches") or ()):
        cp = _map(cp)
        patch = _map(cp.get("patch"))
        apply_to = str(cp.get("applyTo") or "INVALID")
        op = str(patch.get("operation") or "INVALID")
        origin = f"{ef.namespace}/{ef.name} configPatches[{i}]"
        if not patch or apply_to == "INVALID" or op == "INVALID":
            continue
        value = None
        if op != "REMOVE":
            try:
                value = build_value(apply_to, patch.get("value"), strict=False)
            except PatchError as e:
                log.error("EnvoyFilter %s: %s; the patch is not applied", origin, e)
                continue
        if op in INSERT_OPS and apply_to not in INSERTABLE:
            op = "ADD"  # as pilot: an insert where order means nothing is an add
        match = _map(cp.get("match"))
        out.append(ConfigPatch(
            origin=origin, apply_to=apply_to, context=str(match.get("context") or "ANY"), operation=op, value=value,
            listener=match.get("listener") if isinstance(match.get("listener"), Mapping) else None,
            route_configuration=(match.get("routeConfiguration")
                                 if isinstance(match.get("routeConfiguration"), Mapping) else None),
            cluster=match.get("cluster") if isinstance(match.get("cluster"), Mapping) else None,
            proxy=match.get("proxy") if isinstance(match.get("proxy"), Mapping) else None,
        ))
    return tuple(out)


def _selects(ef: Resource, proxy: ProxyView) -> bool:
    if ef.spec.get("targetRefs") or ef.spec.get("targetRef"):
        return False  # policy attachment to Gateway API gateways / services: not modelled (reported at apply)
    labels = _map(_map(ef.spec.get("workloadSelector")).get("labels"))
    return all(proxy.labels.get(k) == v for k, v in labels.items())


def _proxy_matches(cp: ConfigPatch, proxy: ProxyView) -> bool:
    """Istio's proxyMatch: proxyVersion (a regular expression on the proxy's ISTIO_VERSION; no version, no match)
    and metadata (exact values)."""
    if cp.proxy is None:
        return True
    version = str(cp.proxy.get("proxyVersion") or "")
    if version:
        if len(version) > MAX_PROXY_VERSION_LEN or not proxy.istio_version:
            return False
        try:
            if re.search(version, proxy.istio_version) is None:  # Go's MatchString: a match anywhere
                return False
        except re.error:
            return False
    return all(proxy.metadata.get(str(k)) == str(v) for k, v in _map(cp.proxy.get("metadata")).items())


def _order(ef: Resource, root: str) -> tuple[int, int, float, str]:
    created = ef.creation_key[0]
    return (int(ef.spec.get("priority") or 0), 0 if ef.namespace == root else 1, created, f"{ef.name}.{ef.namespace}")


def patch_set(snapshot: MeshSnapshot, proxy: ProxyView, compiled: IdentityMemo) -> PatchSet | None:
    """The patches for `proxy`: EnvoyFilters of the root namespace, then of its own namespace, whose
    workloadSelector matches it, ordered by priority, root namespace first, creation time, then name; None when
    none applies. `compiled` memoizes each resource's built values."""
    filters = snapshot.of_kind("EnvoyFilter")
    if not filters:
        return None
    root = snapshot.mesh.root_namespace
    chosen = [ef for ef in filters if ef.namespace in (root, proxy.namespace) and _selects(ef, proxy)]
    if not chosen:
        return None
    chosen.sort(key=lambda ef: _order(ef, root))
    by: dict[str, list[ConfigPatch]] = {}
    for ef in chosen:
        patches = compiled.get(("envoyfilter", id(ef)), (ef,))
        if patches is None:
            patches = compile_patches(ef)
            compiled.put(("envoyfilter", id(ef)), (ef,), patches)
        for cp in patches:
            if _proxy_matches(cp, proxy):
                by.setdefault(cp.apply_to, []).append(cp)
    return PatchSet({k: tuple(v) for k, v in by.items()}, tuple(chosen)) if by else None


def extension_configs(snapshot: MeshSnapshot, proxy: ProxyView, compiled: IdentityMemo) -> list[message.Message]:
    """Istio's InsertedExtensionConfigurations, served over ECDS: the TypedExtensionConfig values of the proxy's
    EXTENSION_CONFIG patches with operation ADD, in patch order (a later one of the same name is dropped: ECDS
    names are unique); an HTTP filter's `config_discovery` (another patch, usually) asks for them by name."""
    patches = patch_set(snapshot, proxy, compiled) if snapshot.of_kind("EnvoyFilter") else None
    out: dict[str, message.Message] = {}
    for cp in patches.of("EXTENSION_CONFIG") if patches is not None else ():
        name = getattr(cp.value, "name", "")
        if cp.operation == "ADD" and name and name not in out:
            out[name] = cp.value  # type: ignore[assignment]
    return list(out.values())
