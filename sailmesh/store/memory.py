"""In-memory config store: all-or-nothing validated applies, typed models, generations, creation times, events."""

from __future__ import annotations

import builtins
import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.api.change import Change
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.errors import ModelError, ValidationError
from sailmesh.store.base import (
    ApplyResult,
    Broadcaster,
    Rejections,
    Resources,
    StoreIssue,
    Subscription,
    Validator,
    creation_timestamp,
    no_validation,
    sort_by_creation,
)

# top-level keys that are not content: identity, bookkeeping and what the mesh writes
_NOT_CONTENT = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


def _body(r: Resource) -> dict[str, Any]:
    """The top-level fields beside `spec`: the content of kinds without one (ConfigMap and Secret `data`,
    `stringData`, `type`)."""
    raw = r.raw if isinstance(r.raw, Mapping) else {}
    return {k: v for k, v in raw.items() if k not in _NOT_CONTENT}


def _same_content(a: Resource, b: Resource) -> bool:
    """Equal as config (spec and the other top-level fields, labels, annotations, apiVersion); generation and
    source do not count."""
    return (a.api_version, a.spec, a.labels, a.annotations) == (b.api_version, b.spec, b.labels, b.annotations) \
        and _body(a) == _body(b) and _status_read(a) == _status_read(b)


def _status_read(r: Resource) -> Any:
    """The status the mesh reads as config: a Service's (its load balancer's ingress addresses are a Gateway's
    addresses, platform/kube/gatewaystatus.py); no other kind's."""
    return (r.raw or {}).get("status") if r.kind == "Service" and isinstance(r.raw, Mapping) else None


def _with_metadata(resource: Resource, created: str, generation: int) -> Resource:
    raw = dict(resource.raw) if resource.raw else {}
    meta = dict(raw.get("metadata") or {}) if isinstance(raw.get("metadata"), dict) else {}
    meta["creationTimestamp"] = created
    meta["generation"] = generation
    raw["metadata"] = meta
    return resource.replace(raw=raw, generation=generation)  # keeps the model built by check()


class MemoryStore:
    """A ConfigStore in memory. Mutate it from the event loop's thread (or before the loop runs)."""

    def __init__(self, validator: Validator = no_validation) -> None:
        self.validator = validator
        self._items: dict[ResourceKey, Resource] = {}
        self._revision = 0
        self._last_created_us = 0
        self._events = Broadcaster()

    # -- reading ---------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._revision

    def list(self, kind: str | None = None) -> Resources:
        items = self._items.values() if kind is None else (r for r in self._items.values() if r.kind == kind)
        return sort_by_creation(items)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self._items.get(ResourceKey(kind, namespace, name))

    def keys(self) -> set[ResourceKey]:
        return set(self._items)

    def watch(self) -> Subscription:
        return self._events.subscribe()

    def rejected(self) -> Rejections:
        return []  # an invalid apply raises ValidationError; nothing stays rejected

    # -- writing ---------------------------------------------------------------------------------
    def check(self, resources: Iterable[Resource]) -> builtins.list[object]:  # `list` here is the method
        """Every issue the validator (and the store's own key checks) find, without applying.

        A resource the validator accepts gets its typed model built here, once (`Resource.model`): a spec that
        does not fit its model is an issue like any other, so what enters the store is always readable typed.
        """
        issues: list[object] = []
        for r in resources:
            if not r.name:
                issues.append(StoreIssue(r.key, "metadata.name", "is required", r.source.file, r.source.line))
                continue
            found = self.validator(r)
            issues.extend(found)
            if not found:
                try:
                    r.model  # noqa: B018 - built now, once, and cached on the resource
                except ModelError as e:
                    issues.append(StoreIssue(r.key, e.path, e.reason, r.source.file, r.source.line_of(e.path)))
        return issues

    def apply(self, resources: Iterable[Resource]) -> ApplyResult:
        """Validate every resource, then apply all of them, or none (raises ValidationError)."""
        batch = list(resources)
        issues = self.check(batch)
        if issues:
            raise ValidationError(issues)
        return self.commit(batch, ())

    def preview(self, resources: Iterable[Resource]) -> ApplyResult:
        """What apply would do (validated the same way: raises ValidationError), without changing anything."""
        batch = list(resources)
        issues = self.check(batch)
        if issues:
            raise ValidationError(issues)
        result = ApplyResult(revision=self._revision)
        for r in batch:
            old = self._items.get(r.key)
            (result.created if old is None else result.unchanged if _same_content(old, r) else result.updated).append(
                r.key)
        return result

    def delete(self, keys: Iterable[ResourceKey]) -> builtins.list[ResourceKey]:
        """Remove resources; returns the keys that existed. Emits one change set."""
        gone = [k for k in dict.fromkeys(keys) if k in self._items]
        if gone:
            self.commit((), gone)
        return gone

    def commit(self, upserts: Iterable[Resource], deletes: Iterable[ResourceKey]) -> ApplyResult:
        """Apply without validation (callers validated): one revision and one change set, or none."""
        result = ApplyResult()
        changed: set[ResourceKey] = set()
        for key in deletes:
            if self._items.pop(key, None) is not None:
                changed.add(key)
        for r in upserts:
            old = self._items.get(r.key)
            if old is None:
                self._items[r.key] = _with_metadata(r, creation_timestamp(r) or self._now(), max(r.generation, 1))
                result.created.append(r.key)
                changed.add(r.key)
            elif _same_content(old, r):
                # Same config: keep identity/generation, but follow the source (line numbers may move).
                if old.source != r.source:
                    self._items[r.key] = old.replace(source=r.source)
                result.unchanged.append(r.key)
            else:
                self._items[r.key] = _with_metadata(r, creation_timestamp(old), old.generation + 1)
                result.updated.append(r.key)
                changed.add(r.key)
        if changed:
            self._revision += 1
            self._events.publish(Change(frozenset(changed)))
        result.revision = self._revision
        return result

    def _now(self) -> str:
        """A strictly increasing creation time (microseconds), so apply order is creation order."""
        now_us = max(time.time_ns() // 1000, self._last_created_us + 1)
        self._last_created_us = now_us
        when = dt.datetime.fromtimestamp(now_us // 1_000_000, dt.UTC).replace(microsecond=now_us % 1_000_000)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
