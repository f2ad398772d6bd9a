"""Build the next MeshSnapshot from the store, the registry and a change set, reusing what did not change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from sailmesh.api import meshconfig
from sailmesh.api.change import Change
from sailmesh.api.resource import Resource
from sailmesh.registry import endpoints as endpoints_mod
from sailmesh.registry.jwks import JWKS_KIND
from sailmesh.registry.services import ServiceIndex, build_index
from sailmesh.registry.workloads import WORKLOAD_KIND, WorkloadSource, all_workloads
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, Service, Workload
from sailmesh.store.base import ConfigReader, sort_by_creation

SERVICE_KINDS = frozenset({"Service", "ServiceEntry"})
# Kinds whose changes only move endpoints (never services, routes or listeners).
ENDPOINT_KINDS = frozenset({WORKLOAD_KIND, "WorkloadEntry"})


def changed_endpoints(previous: MeshSnapshot, current: MeshSnapshot) -> frozenset[tuple[str, int]]:
    """(hostname, port) keys whose endpoints differ between two snapshots (added, removed or changed)."""
    if current.endpoints is previous.endpoints:
        return frozenset()
    keys = set(previous.endpoints) | set(current.endpoints)
    return frozenset(k for k in keys if previous.endpoints.get(k, ()) != current.endpoints.get(k, ()))


def _group(resources: Iterable[Resource]) -> dict[str, tuple[Resource, ...]]:
    by_kind: dict[str, list[Resource]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r)
    return {k: tuple(sort_by_creation(v)) for k, v in sorted(by_kind.items())}


def _reuse_map(old: Mapping[str, Service] | None, new: Mapping[str, Service]) -> Mapping[str, Service]:
    return old if old is not None and old == new else new


def _service_index(previous: MeshSnapshot | None, config: Mapping[str, tuple[Resource, ...]],
                   mesh: MeshDefaults) -> ServiceIndex:
    """The previous snapshot's service index while its Service/ServiceEntry tuples are the same objects."""
    svcs, entries = config.get("Service", ()), config.get("ServiceEntry", ())
    if previous is not None and previous.service_index is not None and previous.mesh == mesh \
            and previous.config.get("Service", ()) is svcs and previous.config.get("ServiceEntry", ()) is entries:
        return previous.service_index
    return build_index([*svcs, *entries], mesh)


def meshconfig_defaults(defaults: MeshDefaults, mc: meshconfig.MeshConfig) -> MeshDefaults:
    """The process defaults with the fields the mesh config sets (trust domain, root namespace, egress mode)."""
    return replace(defaults, trust_domain=mc.trust_domain, root_namespace=mc.root_namespace,
                   outbound_traffic_policy=mc.outbound_traffic_policy.mode) \
        if mc is not meshconfig.DEFAULT_MESH_CONFIG else defaults


def build(
    previous: MeshSnapshot | None,
    store: ConfigReader,
    registry: WorkloadSource,
    change: Change,
    mesh: MeshDefaults | None = None,
    mesh_file: Mapping[str, Any] | None = None,
    jwks: Mapping[str, str] | None = None,
) -> MeshSnapshot:
    """The next snapshot. Reads only the store and the registry; parts the change set cannot have touched are
    taken from `previous` as they are (same objects), so consumers can skip work by identity. The snapshot's
    SnapshotIndex is built from the previous one's.

    `mesh` are the process's defaults, `mesh_file` the mesh config file's mapping (None: the previous one's);
    the ConfigMap `istio` in the root namespace overlays the file (api.meshconfig). `jwks` (jwksUri -> fetched
    key set, registry.jwks) replaces the previous snapshot's when given."""
    defaults = mesh or (previous.mesh_defaults if previous else MeshDefaults())
    kinds = change.kinds - {JWKS_KIND}
    mesh_file = mesh_file if mesh_file is not None else (previous.mesh_file if previous else {})
    if previous is None or change.full or "ConfigMap" in kinds or defaults != previous.mesh_defaults \
            or mesh_file is not previous.mesh_file:
        mesh_config = meshconfig.effective(mesh_file, tuple(store.list("ConfigMap")), defaults.root_namespace)
        if previous is not None and mesh_config == previous.mesh_config:
            mesh_config = previous.mesh_config
    else:
        mesh_config = previous.mesh_config
    mesh = meshconfig_defaults(defaults, mesh_config)
    if previous is not None and mesh == previous.mesh:
        mesh = previous.mesh
    full = previous is None or change.full or mesh != previous.mesh
    if jwks is None:
        jwks = previous.jwks if previous is not None else MappingProxyType({})
    elif previous is not None and jwks == previous.jwks:
        jwks = previous.jwks

    # Config: per kind, rebuilt only for the kinds that changed.
    config: Mapping[str, tuple[Resource, ...]]
    if full or previous is None:
        config = MappingProxyType(_group(store.list()))
    else:
        config_kinds = kinds - {WORKLOAD_KIND}
        if not config_kinds:
            config = previous.config
        else:
            merged = dict(previous.config)
            for kind in config_kinds:
                fresh = tuple(sort_by_creation(store.list(kind)))
                if fresh:
                    merged[kind] = fresh
                else:
                    merged.pop(kind, None)
            config = MappingProxyType(dict(sorted(merged.items())))

    services_changed = full or bool(kinds & SERVICE_KINDS)
    workloads_changed = full or bool(kinds & ENDPOINT_KINDS)

    services: Mapping[str, Service]
    index = _service_index(previous, config, mesh)
    if services_changed or previous is None:
        services = _reuse_map(previous.services if previous else None, index.services())
    else:
        services = previous.services

    workloads: tuple[Workload, ...]
    if workloads_changed or previous is None:
        workloads = all_workloads(registry.workloads(), config.get("WorkloadEntry", ()))
        if previous is not None and workloads is not previous.workloads and workloads == previous.workloads:
            workloads = previous.workloads
    else:
        workloads = previous.workloads

    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]
    if previous is None:
        endpoints = endpoints_mod.compute(index.records, workloads)
    elif services is previous.services and workloads is previous.workloads:
        endpoints = previous.endpoints
    elif services is previous.services:
        # Workloads only: recompute the services whose selectors match what changed.
        endpoints = endpoints_mod.update(previous.endpoints, index.records, previous.workloads, workloads)
    else:
        computed = endpoints_mod.compute(index.records, workloads)
        old = previous.endpoints
        reused = {k: (old[k] if k in old and old[k] == v else v) for k, v in computed.items()}
        same = len(reused) == len(old) and all(reused[k] is old.get(k) for k in reused)
        endpoints = old if same else MappingProxyType(reused)

    return MeshSnapshot(
        version=(previous.version + 1) if previous else 1,
        mesh=mesh,
        mesh_defaults=defaults,
        mesh_file=mesh_file,
        mesh_config=mesh_config,
        config=config,
        services=services,
        endpoints=endpoints,
        workloads=workloads,
        jwks=jwks,
        service_index=index,
        previous_index=previous.index if previous is not None else None,
    )
