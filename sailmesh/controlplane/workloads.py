"""The workload file the platform writes (`--workload-file`): read at start, followed as it is replaced."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import watchfiles

from sailmesh.errors import RegistryError
from sailmesh.platform import workload_file
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry

log = logging.getLogger("sailmesh.controlplane")


@dataclass(frozen=True)
class FileChanges:
    """What a new version of the file changes against the version last applied."""

    entries: dict[tuple[str, str], dict[str, Any]]  # the new version's entries by (namespace, name)
    changed: list[Workload]  # entries new or different
    removed: list[tuple[str, str]]  # (namespace, name) no longer in the file


class WorkloadFileFollower:
    """Keeps the local registry holding exactly the workloads the file declares."""

    def __init__(self, path: str, local: LocalRegistry) -> None:
        self.path = os.path.abspath(path)
        self.local = local
        # the entries last applied, as parsed: a new version's unchanged entries are recognised by comparing the
        # parsed JSON (dict equality, in C), not by building and registering a Workload for each (an endpoint
        # change in a 2,000-workload file built and compared 2,000 of them: ~25 ms, half on the event loop)
        self._applied: dict[tuple[str, str], dict[str, Any]] = {}

    def read(self) -> FileChanges | None:
        """The file's changes against what was last applied; None (logged) when it cannot be read or parsed.
        Runs in a worker thread: it only reads `_applied`, which apply() replaces on the event loop."""
        try:
            entries: dict[tuple[str, str], dict[str, Any]] = {}
            changed = []
            applied = self._applied
            for item in workload_file.read_items(self.path):
                key = workload_file.item_key(self.path, item)
                entries[key] = item
                if applied.get(key) != item:
                    changed.append(workload_file.from_item(self.path, item))
            return FileChanges(entries, changed, [k for k in applied if k not in entries])
        except RegistryError as e:
            log.error("%s", e)
            return None

    def apply(self, changes: FileChanges) -> None:
        """Make the registry hold the new version; unchanged workloads publish nothing."""
        for namespace, name in changes.removed:
            self.local.unregister(name, namespace)
        for w in changes.changed:
            self.local.register(w)
        self._applied = changes.entries

    def load(self) -> None:
        """Register what the file declares now (start-up: before the first snapshot)."""
        changes = self.read()
        if changes is not None:
            self.apply(changes)

    async def follow(self) -> None:
        """Apply each new version of the file until cancelled."""
        # The platform replaces the file atomically (os.replace), so one event is one complete file: a short
        # debounce (every millisecond here is convergence time), and the parse off the event loop.
        async for _ in watchfiles.awatch(os.path.dirname(self.path),
                                         watch_filter=lambda _c, p: os.path.abspath(p) == self.path,
                                         debounce=5, step=5):
            changes = await asyncio.to_thread(self.read)
            if changes is not None:
                self.apply(changes)
