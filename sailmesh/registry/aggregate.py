"""The aggregate registry: several workload sources behind the one WorkloadSource a snapshot build reads.

Istio's aggregate controller (pilot/pkg/serviceregistry/aggregate) combines its registries the same way:
the build sees one list of workloads and one change stream. Today the sources are the local registry (the
embedded platform's workloads); a Kubernetes source (Pods, EndpointSlices) joins as one more member.
WorkloadEntry and ServiceEntry resources are config: snapshot.build reads them from the store and adds
them to these workloads (registry/workloads.py `all_workloads`).

Workloads keep their `origin`, so two sources may each know a workload of the same name; the build keys
workloads by (namespace, name, origin). Writes (register, unregister) go to the local registry, the one
source this process owns; other sources change only through their own watches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry, WorkloadSource


class WatchedSource(WorkloadSource, Protocol):
    """A member of the aggregate: its workloads, a revision that grows with each change, and a change stream."""

    def watch(self) -> AsyncIterator[Change]: ...


class AggregateRegistry:
    """Workloads of every source, sorted by (namespace, name); one revision and one watch over them all."""

    def __init__(self, local: LocalRegistry, *others: WatchedSource) -> None:
        self.local = local
        self.sources: tuple[WatchedSource, ...] = (local, *others)
        self._merged: tuple[tuple[int, ...], tuple[Workload, ...]] | None = None

    @property
    def revision(self) -> int:
        """The sum of the sources' revisions: it grows whenever any source changes."""
        return sum(s.revision for s in self.sources)

    def workloads(self) -> tuple[Workload, ...]:
        """Every source's workloads, sorted by (namespace, name), source order for equal names.

        The same tuple until a source changes (a single source's own tuple), so the build can skip work
        by identity.
        """
        if len(self.sources) == 1:
            return self.local.workloads()
        revisions = tuple(s.revision for s in self.sources)
        if self._merged is None or self._merged[0] != revisions:
            found = [w for s in self.sources for w in s.workloads()]
            self._merged = (revisions, tuple(sorted(found, key=lambda w: (w.namespace, w.name))))
        return self._merged[1]

    def watch(self) -> AsyncIterator[Change]:
        """Change events of every source from now on; events that arrive together come as one change set."""
        if len(self.sources) == 1:
            return self.local.watch()
        return MergedWatch([s.watch() for s in self.sources])

    # -- writes go to the local registry ----------------------------------------------------------
    def register(self, workload: Workload) -> bool:
        """Add or replace a local workload (see LocalRegistry.register)."""
        return self.local.register(workload)

    def unregister(self, name: str, namespace: str) -> bool:
        """Remove a local workload (see LocalRegistry.unregister)."""
        return self.local.unregister(name, namespace)


async def _next_or_none(watch: AsyncIterator[Change]) -> Change | None:
    try:
        return await anext(watch)
    except StopAsyncIteration:
        return None


class MergedWatch:
    """Several change streams as one: each step waits for the first, then merges every change that is ready.

    The per-stream waits live only inside one `__anext__`; the ones still waiting are cancelled before it
    returns (a Subscription keeps its pending change until it is read, so nothing is lost between steps).
    A stream that ends leaves the others running; the merged stream ends when all have ended.
    """

    def __init__(self, watches: Sequence[AsyncIterator[Change]]) -> None:
        self._watches = list(watches)

    def __aiter__(self) -> MergedWatch:
        return self

    async def __anext__(self) -> Change:
        while self._watches:
            waits = {asyncio.ensure_future(_next_or_none(w)): w for w in self._watches}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in waits:
                    t.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            keys: set[ResourceKey] = set()
            got = full = False
            for t, w in waits.items():
                if t.cancelled():
                    continue
                change = t.result()
                if change is None:
                    if w in self._watches:  # not already closed by aclose()
                        self._watches.remove(w)
                else:
                    keys |= change.keys
                    full = full or change.full
                    got = True
            if got:
                return Change(frozenset(keys), full)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop watching every source."""
        for w in self._watches:
            close = getattr(w, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self._watches = []
