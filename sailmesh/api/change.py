"""Change: what changed in the config stores or the registries, the one change type from a store to a push."""

from __future__ import annotations

from dataclasses import dataclass

from sailmesh.api.resource import ResourceKey


@dataclass(frozen=True)
class Change:
    """Keys of the resources that changed (config kinds, or workloads of kind "Workload"), or everything.

    Stores and registries publish it, the debouncer merges it, `snapshot.build` rebuilds what it names, and
    `generate.affect.push_request` turns it into the xDS types and proxies to push.
    """

    keys: frozenset[ResourceKey] = frozenset()
    full: bool = False

    def merge(self, other: Change) -> Change:
        """Both changes as one."""
        return Change(self.keys | other.keys, self.full or other.full)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k.kind for k in self.keys)

    @staticmethod
    def everything() -> Change:
        """A change that may have altered anything (start-up, mesh settings)."""
        return Change(full=True)

    @staticmethod
    def of(*keys: ResourceKey) -> Change:
        return Change(frozenset(keys))
