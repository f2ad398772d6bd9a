"""The workload file the platform writes (`--workload-file`): read at start, followed as it is replaced."""

from __future__ import annotations

import asyncio
import logging
import os

import watchfiles

from sailmesh.errors import RegistryError
from sailmesh.platform import workload_file
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry

log = logging.getLogger("sailmesh.controlplane")


class WorkloadFileFollower:
    """Keeps the local registry holding exactly the workloads the file declares."""

    def __init__(self, path: str, local: LocalRegistry) -> None:
        self.path = os.path.abspath(path)
        self.local = local

    def read(self) -> dict[tuple[str, str], Workload] | None:
        """The file's workloads by (namespace, name); None (logged) when it cannot be read or parsed."""
        try:
            return {(w.namespace, w.name): w for w in workload_file.read(self.path)}
        except RegistryError as e:
            log.error("%s", e)
            return None

    def apply(self, wanted: dict[tuple[str, str], Workload]) -> None:
        """Make the registry hold exactly `wanted`; unchanged workloads publish nothing."""
        for w in self.local.workloads():  # the file declares local workloads only
            if (w.namespace, w.name) not in wanted:
                self.local.unregister(w.name, w.namespace)
        for w in wanted.values():
            self.local.register(w)

    def load(self) -> None:
        """Register what the file declares now (start-up: before the first snapshot)."""
        wanted = self.read()
        if wanted is not None:
            self.apply(wanted)

    async def follow(self) -> None:
        """Apply each new version of the file until cancelled."""
        # The platform replaces the file atomically (os.replace), so one event is one complete file: a short
        # debounce (every millisecond here is convergence time), and the parse off the event loop.
        async for _ in watchfiles.awatch(os.path.dirname(self.path),
                                         watch_filter=lambda _c, p: os.path.abspath(p) == self.path,
                                         debounce=5, step=5):
            wanted = await asyncio.to_thread(self.read)
            if wanted is not None:
                self.apply(wanted)
