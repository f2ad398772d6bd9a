"""Workloads: the local registry the embedded platform feeds, and WorkloadEntry / WorkloadGroup resources."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import msgspec

from sailmesh.api import locality
from sailmesh.api.change import Change
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import WorkloadEntry, WorkloadGroup
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.errors import ModelError, RegistryError
from sailmesh.registry.model import Workload
from sailmesh.store.base import Broadcaster, Subscription

log = logging.getLogger(__name__)

WORKLOAD_KIND = "Workload"  # kind of the ResourceKeys that name registry workloads in change sets
ENTRY_ORIGIN = "WorkloadEntry"


def workload_key(name: str, namespace: str) -> ResourceKey:
    return ResourceKey(WORKLOAD_KIND, namespace, name)




class WorkloadSource(Protocol):
    """What a snapshot build needs from a registry: the current workloads and a revision."""

    @property
    def revision(self) -> int: ...

    def workloads(self) -> Sequence[Workload]: ...


def _freeze(w: Workload) -> Workload:
    return Workload(
        name=w.name,
        namespace=w.namespace,
        address=w.address,
        labels=MappingProxyType(dict(w.labels)),
        service_account=w.service_account,
        app_ports=MappingProxyType(dict(w.app_ports)),
        locality=locality.of_workload(w.locality, w.labels),  # the field, else topology / istio-locality labels
        network=w.network,
        healthy=w.healthy,
        origin=w.origin,
        ports=MappingProxyType(dict(w.ports)),
        weight=w.weight,
        service=w.service,
    )


class LocalRegistry:
    """Workloads the embedded platform runs. Call it from the event loop's thread (or before the loop)."""

    def __init__(self) -> None:
        self._items: dict[ResourceKey, Workload] = {}
        self._revision = 0
        self._events = Broadcaster()
        self._sorted: tuple[Workload, ...] | None = None

    @property
    def revision(self) -> int:
        return self._revision

    def workloads(self) -> tuple[Workload, ...]:
        """Every workload, sorted by (namespace, name); the same tuple until something changes."""
        if self._sorted is None:
            self._sorted = tuple(self._items[k] for k in sorted(self._items, key=lambda k: (k.namespace, k.name)))
        return self._sorted

    def get(self, name: str, namespace: str) -> Workload | None:
        return self._items.get(workload_key(name, namespace))

    def register(self, workload: Workload) -> bool:
        """Add or replace a workload; returns whether anything changed (no event when it did not)."""
        if not workload.name or not workload.namespace or not workload.address:
            raise RegistryError(f"workload needs a name, namespace and address: {workload!r}")
        key = workload_key(workload.name, workload.namespace)
        w = _freeze(workload)
        if self._items.get(key) == w:
            return False
        self._items[key] = w
        self._changed(key)
        return True

    def unregister(self, name: str, namespace: str) -> bool:
        key = workload_key(name, namespace)
        if self._items.pop(key, None) is None:
            return False
        self._changed(key)
        return True

    def set_healthy(self, name: str, namespace: str, healthy: bool) -> bool:
        """Mark a workload ready or not (its endpoints stay, with their health status)."""
        w = self.get(name, namespace)
        if w is None:
            raise RegistryError(f"no workload {namespace}/{name}")
        from dataclasses import replace

        return self.register(replace(w, healthy=healthy))

    def watch(self) -> Subscription:
        """Change events from now on (Change with keys of kind "Workload"); unread ones merge."""
        return self._events.subscribe()

    def _changed(self, key: ResourceKey) -> None:
        self._sorted = None
        self._revision += 1
        self._events.publish(Change.of(key))


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _healthy(resource: Resource) -> bool:
    """Istio's WorkloadEntry health: a `Healthy` status condition set to False marks it unhealthy."""
    status = resource.raw.get("status") if isinstance(resource.raw, Mapping) else None
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, Mapping) and c.get("type") == "Healthy":
            return str(c.get("status", "True")).lower() != "false"
    return True


def workload_from_spec(name: str, namespace: str, spec: WorkloadEntry, origin: str, healthy: bool = True,
                       labels: Mapping[str, str] | None = None) -> Workload:
    """A Workload from a typed WorkloadEntry spec (also ServiceEntry inline endpoints)."""
    return _freeze(
        Workload(
            name=name,
            namespace=namespace,
            address=spec.address or "",
            labels={**(labels or {}), **(spec.labels or {})},
            service_account=spec.service_account or "default",
            locality=spec.locality or "",
            network=spec.network or "",
            healthy=healthy,
            origin=origin,
            ports=dict(spec.ports or {}),
            weight=spec.weight if spec.weight is not None and spec.weight > 0 else 1,
        )
    )


def workload_from_entry(entry: Resource) -> Workload:
    """The Workload a WorkloadEntry resource describes (address, labels, ports, SA, weight, locality, network).

    ModelError if its spec does not fit the typed model (the stores refuse such specs).
    """
    return workload_from_spec(entry.name, entry.namespace, model_of(entry, WorkloadEntry),
                              f"{ENTRY_ORIGIN} {entry.namespace}/{entry.name}", healthy=_healthy(entry))


def _entry_workloads(entries: Iterable[Resource]) -> Iterable[Workload]:
    for e in entries:
        if e.kind != "WorkloadEntry":
            continue
        try:
            yield workload_from_entry(e)
        except ModelError as err:  # only config that bypassed a store: skipped, as a store would refuse it
            log.warning("ignored: %s", err)


def is_entry(workload: Workload) -> bool:
    """Whether the workload came from a WorkloadEntry (its `ports` map is keyed by service port name)."""
    return workload.origin.startswith(ENTRY_ORIGIN + " ")


def all_workloads(local: Iterable[Workload], entries: Iterable[Resource]) -> tuple[Workload, ...]:
    """Local workloads plus every WorkloadEntry with an address, sorted by (namespace, name)."""
    found = [*local, *_entry_workloads(entries)]
    return tuple(sorted((w for w in found if w.address), key=lambda w: (w.namespace, w.name, w.origin)))


def entry_for_group(group: Resource, address: str, network: str = "") -> dict[str, Any]:
    """The WorkloadEntry document Istio's auto-registration creates for a proxy joining a WorkloadGroup.

    Named `<group>-<address with dots as dashes>[-<network>]`; labels and spec from the group's template.
    ModelError if the group's spec does not fit its typed model.
    """
    spec_model = model_of(group, WorkloadGroup)
    meta = spec_model.metadata or {}  # labels and annotations, as written
    name = f"{group.name}-{address.replace('.', '-').replace(':', '-')}" + (f"-{network}" if network else "")
    template = spec_model.template
    spec: dict[str, Any] = msgspec.to_builtins(template) if template is not None else {}
    spec["address"] = address
    if network:
        spec["network"] = network
    labels = {**_str_map(meta.get("labels")), **_str_map(spec.get("labels"))}
    spec["labels"] = labels
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {
            "name": name,
            "namespace": group.namespace,
            "labels": labels,
            "annotations": {**_str_map(meta.get("annotations")), "istio.io/autoRegistrationGroup": group.name},
        },
        "spec": spec,
    }
