"""MemoryStore: all-or-nothing validated applies, generations, creation order, deletes and watch events."""

from __future__ import annotations

import asyncio

import pytest

from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.errors import ValidationError
from sailmesh.store.base import creation_timestamp
from sailmesh.store.memory import MemoryStore


def vs(name: str, weight: int = 100, ns: str = "default", created: str = "") -> Resource:
    meta = f"  creationTimestamp: '{created}'\n" if created else ""
    text = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
{meta}spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {weight}
"""
    r = parse_text(text, f"{name}.yaml")
    assert not r.errors
    return r.resources[0]


def weight_validator(r: Resource) -> list[object]:
    """Rejects any route weight above 100 (a stand-in for api.validate)."""
    out: list[object] = []
    for http in r.spec.get("http", []):
        for dest in http.get("route", []):
            if dest.get("weight", 0) > 100:
                out.append(f"{r.source.file}:{r.source.line}: {r.key}: weight: must be at most 100")
    return out


def test_apply_assigns_creation_and_generation_and_reports() -> None:
    s = MemoryStore()
    res = s.apply([vs("a"), vs("b")])
    assert res.created == [ResourceKey("VirtualService", "default", "a"), ResourceKey("VirtualService", "default", "b")]
    assert s.revision == 1
    a = s.get("VirtualService", "default", "a")
    assert a is not None and a.generation == 1 and creation_timestamp(a)
    # Same content again: nothing changes, no revision bump, generation kept.
    res = s.apply([vs("a")])
    assert res.unchanged == [a.key] and not res.changed and s.revision == 1
    # Changed spec: generation bumps, creation time is kept.
    res = s.apply([vs("a", weight=90)])
    a2 = s.get("VirtualService", "default", "a")
    assert res.updated == [a.key] and a2 is not None and a2.generation == 2 and s.revision == 2
    assert creation_timestamp(a2) == creation_timestamp(a)


def test_invalid_apply_applies_nothing() -> None:
    s = MemoryStore(weight_validator)
    with pytest.raises(ValidationError) as e:
        s.apply([vs("good"), vs("bad", weight=200)])
    assert "weight: must be at most 100" in str(e.value) and len(e.value.issues) == 1
    assert s.list() == [] and s.revision == 0


def test_list_is_oldest_first_istio_order() -> None:
    # Istio's sortConfigByCreationTime: creationTimestamp, then name, then namespace.
    s = MemoryStore()
    s.apply([vs("zz", created="2024-01-01T00:00:00Z"), vs("bb", ns="x", created="2024-01-01T00:00:01Z"),
             vs("bb", ns="a", created="2024-01-01T00:00:01Z"), vs("aa", ns="z", created="2024-01-01T00:00:01Z")])
    s.apply([vs("new")])  # assigned now: newest
    order = [(r.namespace, r.name) for r in s.list("VirtualService")]
    assert order == [("default", "zz"), ("z", "aa"), ("a", "bb"), ("x", "bb"), ("default", "new")]
    # Store-assigned times follow apply order even within one batch.
    s2 = MemoryStore()
    s2.apply([vs("c"), vs("a"), vs("b")])
    assert [r.name for r in s2.list()] == ["c", "a", "b"]


async def test_watch_events_merge_and_skip_no_ops() -> None:
    s = MemoryStore()
    w = s.watch()
    s.apply([vs("a")])
    first = await asyncio.wait_for(w.__anext__(), 5)
    assert first == Change.of(ResourceKey("VirtualService", "default", "a"))
    # Two changes before the watcher reads: one merged change set.
    s.apply([vs("b")])
    s.delete([ResourceKey("VirtualService", "default", "a")])
    merged = await asyncio.wait_for(w.__anext__(), 5)
    assert merged.keys == {ResourceKey("VirtualService", "default", "a"), ResourceKey("VirtualService", "default", "b")}
    assert s.revision == 3
    # A no-op apply and a delete of a missing key emit nothing.
    s.apply([vs("b")])
    assert s.delete([ResourceKey("VirtualService", "default", "nope")]) == []
    nxt = asyncio.ensure_future(w.__anext__())
    await asyncio.sleep(0.05)  # give a wrong event the chance to arrive
    assert not nxt.done()
    w.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(nxt, 5)


@pytest.mark.parametrize("kind_and_body", [
    ("ConfigMap", "data:\n  mesh: 'accessLogFile: {value}'\n"),
    ("Secret", "type: Opaque\nstringData:\n  key: '{value}'\n"),
])
def test_kinds_without_spec_change_with_their_data(kind_and_body: tuple[str, str]) -> None:
    # a ConfigMap's or Secret's content is `data` (Kubernetes has no spec there): re-applying the mesh ConfigMap
    # with another provider port, or a gateway Secret with a new certificate, is an update, not "unchanged"
    # (session 6: switching a tracing mesh from Zipkin to OpenTelemetry kept the old collector port)
    kind, body = kind_and_body

    def doc(value: str) -> Resource:
        text = f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: istio, namespace: istio-system}}\n" + \
            body.format(value=value)
        return parse_text(text, "cm.yaml").resources[0]

    s = MemoryStore()
    s.apply([doc("/tmp/a")])
    assert s.apply([doc("/tmp/a")]).unchanged
    res = s.apply([doc("/tmp/b")])
    assert res.updated and s.revision == 2
    got = s.get(kind, "istio-system", "istio")
    assert got is not None and "/tmp/b" in str(got.raw)


def test_a_service_status_change_is_an_update() -> None:
    """A LoadBalancer Service getting its ingress address (a status write on Kubernetes) changes what a Gateway
    reports as its address (platform/kube/gatewaystatus.py): an update, not "unchanged"; other kinds' status is not
    config (a Gateway's status written by the control plane must not come back as a change)."""
    def doc(kind: str, ip: str) -> Resource:
        spec = "spec: {type: LoadBalancer, ports: [{port: 80}]}" if kind == "Service" else \
            "spec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}"
        version = "v1" if kind == "Service" else "gateway.networking.k8s.io/v1"
        text = (f"apiVersion: {version}\nkind: {kind}\nmetadata: {{name: gw, namespace: default}}\n{spec}\n"
                f"status: {{loadBalancer: {{ingress: [{{ip: '{ip}'}}]}}, addresses: [{{value: '{ip}'}}]}}\n")
        return parse_text(text, "x.yaml").resources[0]

    s = MemoryStore()
    s.apply([doc("Service", ""), doc("Gateway", "")])
    res = s.apply([doc("Service", "203.0.113.7"), doc("Gateway", "203.0.113.7")])
    assert len(res.updated) == 1 and res.updated[0].kind == "Service"
    got = s.get("Service", "default", "gw")
    assert got is not None and "203.0.113.7" in str(got.raw)
