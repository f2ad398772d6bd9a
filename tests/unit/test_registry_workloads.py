"""LocalRegistry events, WorkloadEntry conversion and WorkloadGroup auto-registration entries."""

from __future__ import annotations

import asyncio

import pytest

from sailmesh.api.parse import parse_text, resource_from_dict
from sailmesh.errors import ModelError, RegistryError
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import (
    LocalRegistry,
    all_workloads,
    entry_for_group,
    workload_from_entry,
    workload_key,
)


async def test_local_registry_events() -> None:
    reg = LocalRegistry()
    w = reg.watch()
    a = Workload("reviews-v1-0", "default", "127.0.1.2", {"app": "reviews"}, app_ports={9080: 41234})
    assert reg.register(a)
    change = await asyncio.wait_for(w.__anext__(), 5)
    assert change.keys == {workload_key("reviews-v1-0", "default")} and not change.full
    assert not reg.register(a)  # same workload again: no event, no revision
    assert reg.revision == 1
    reg.set_healthy("reviews-v1-0", "default", False)
    b = Workload("ratings-v1-0", "default", "127.0.1.3")
    reg.register(b)
    merged = await asyncio.wait_for(w.__anext__(), 5)
    assert merged.keys == {workload_key("reviews-v1-0", "default"), workload_key("ratings-v1-0", "default")}
    stored = reg.get("reviews-v1-0", "default")
    assert stored is not None and not stored.healthy
    assert [x.name for x in reg.workloads()] == ["ratings-v1-0", "reviews-v1-0"]
    assert reg.unregister("ratings-v1-0", "default") and not reg.unregister("ratings-v1-0", "default")
    assert (await asyncio.wait_for(w.__anext__(), 5)).keys == {workload_key("ratings-v1-0", "default")}
    # Registered workloads are frozen copies: mutating the caller's dicts changes nothing.
    labels = {"app": "x"}
    reg.register(Workload("x-0", "default", "127.0.1.9", labels))
    labels["app"] = "y"
    got = reg.get("x-0", "default")
    assert got is not None and got.labels["app"] == "x"
    with pytest.raises(TypeError):
        got.labels["app"] = "z"  # type: ignore[index]
    with pytest.raises(RegistryError):
        reg.register(Workload("no-address", "default", ""))


def test_workload_entry_fields() -> None:
    [we] = parse_text("""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm, namespace: bookinfo}
spec:
  address: 10.0.0.9
  labels: {app: details, instance-id: vm1}
  ports: {http: 19080}
  serviceAccount: bookinfo-details
  weight: 4
  locality: us-central1/us-central1-a
  network: vm-network
""").resources
    w = workload_from_entry(we)
    assert (w.name, w.namespace, w.address, w.service_account, w.weight, w.locality, w.network) == (
        "details-vm", "bookinfo", "10.0.0.9", "bookinfo-details", 4, "us-central1/us-central1-a", "vm-network")
    assert dict(w.labels) == {"app": "details", "instance-id": "vm1"} and dict(w.ports) == {"http": 19080}
    assert w.origin == "WorkloadEntry bookinfo/details-vm" and w.healthy


def test_workload_group_template_to_entry() -> None:
    [group] = parse_text("""
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata: {labels: {app: reviews, version: v4}}
  template: {ports: {http: 9080}, serviceAccount: bookinfo-reviews}
""").resources
    doc = entry_for_group(group, "10.4.0.7")
    entry = resource_from_dict(doc)
    assert entry.name == "reviews-10-4-0-7" and entry.namespace == "bookinfo"
    w = workload_from_entry(entry)
    assert w.address == "10.4.0.7" and dict(w.labels) == {"app": "reviews", "version": "v4"}
    assert w.service_account == "bookinfo-reviews" and dict(w.ports) == {"http": 9080}


def test_workload_entries_read_typed_and_unfit_ones_are_skipped() -> None:
    """A WorkloadEntry whose spec does not fit its model (ports must be numbers) gives no workload."""
    docs = parse_text("""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ok}
spec: {address: 10.0.0.1, ports: {http: 8080}, weight: 0}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unfit}
spec: {address: 10.0.0.2, ports: {http: "8080"}}
""").resources
    with pytest.raises(ModelError):
        workload_from_entry(docs[1])
    [w] = all_workloads([], docs)
    assert (w.name, dict(w.ports), w.weight, w.service_account) == ("ok", {"http": 8080}, 1, "default")
