"""The ConfigStore contract: list/get/watch resources, change sets, rejections, creation order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sailmesh.api.change import Change
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.api.resource import creation_timestamp as creation_timestamp

Validator = Callable[[Resource], "list[object]"]
Resources = list[Resource]
Rejections = list["Rejection"]


def no_validation(resource: Resource) -> list[object]:
    """The default validator: accepts everything (the control plane plugs api.validate in)."""
    return []


@dataclass(frozen=True)
class Rejection:
    """A file or resource the store refused, with every reason; `kept` = its previous version stays in force."""

    file: str
    key: ResourceKey | None
    errors: tuple[object, ...]
    kept: bool = False

    def __str__(self) -> str:
        what = f"{self.file}" + (f" ({self.key})" if self.key else "")
        note = " (previous version kept in force)" if self.kept else ""
        return f"{what} rejected{note}:\n" + "\n".join(f"  {e}" for e in self.errors)


@dataclass(frozen=True)
class StoreIssue:
    """A problem the store itself finds (duplicate, missing name), printed like api.validate's issues."""

    resource: ResourceKey
    field: str
    message: str
    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        at = f"{self.field}: " if self.field else ""
        return f"{where}{self.resource}: {at}{self.message}"


@dataclass
class ApplyResult:
    """What an apply did, per key."""

    created: list[ResourceKey] = field(default_factory=list)
    updated: list[ResourceKey] = field(default_factory=list)
    unchanged: list[ResourceKey] = field(default_factory=list)
    revision: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


class ConfigReader(Protocol):
    """The read side of a ConfigStore: what building a snapshot needs. LayeredStore is only this."""

    @property
    def revision(self) -> int:
        """Increases by one on every change that altered at least one resource."""
        ...

    def list(self, kind: str | None = None) -> Resources:
        """Every resource in force (of one kind), oldest first (see creation_sort_key)."""
        ...

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        """One resource, or None."""
        ...

    def rejected(self) -> Rejections:
        """Files or resources currently refused, with their errors (for `sailmesh get` and status)."""
        ...


class ConfigStore(ConfigReader, Protocol):
    """Where mesh config comes from. Implemented by MemoryStore, FileStore (and a Kubernetes store)."""

    def watch(self) -> AsyncIterator[Change]:
        """Changes from now on; changes the consumer has not read yet are merged into one."""
        ...


def creation_sort_key(resource: Resource) -> tuple[float, str, str]:
    """Istio's order for "the oldest wins": creation time, then name, then namespace (sortConfigByCreationTime)."""
    return resource.creation_key


def sort_by_creation(resources: Iterable[Resource]) -> Resources:
    return sorted(resources, key=creation_sort_key)


class Broadcaster:
    """Fans change sets out to watchers; a slow watcher gets one merged change set, never a backlog.

    Publish from the event loop's thread (or before the loop runs).
    """

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def publish(self, change: Change) -> None:
        for s in list(self._subs):
            s.offer(change)

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subs.add(sub)
        return sub

    def _drop(self, sub: Subscription) -> None:
        self._subs.discard(sub)


class Subscription:
    """One watcher: registered when created (no change is missed between watch() and the first await)."""

    def __init__(self, owner: Broadcaster) -> None:
        self._owner = owner
        self._pending: Change | None = None
        self._event = asyncio.Event()
        self._closed = False

    def offer(self, change: Change) -> None:
        self._pending = change if self._pending is None else self._pending.merge(change)
        self._event.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        while self._pending is None:
            if self._closed:
                raise StopAsyncIteration
            self._event.clear()
            await self._event.wait()
        change, self._pending = self._pending, None
        return change

    def close(self) -> None:
        """Stop watching; a pending __anext__ ends the iteration."""
        self._closed = True
        self._owner._drop(self)
        self._event.set()

    async def aclose(self) -> None:
        """close() as an async generator offers it (the aggregate registry closes its sources' watches so)."""
        self.close()
