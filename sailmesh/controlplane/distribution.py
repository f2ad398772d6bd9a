"""Istio's config distribution tracking: which connected proxies hold each config object's current generation.

Istio (pilot/pkg/status/distribution, PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING) counts, per config object at its
generation, the proxies that ACKed a push containing it, out of every proxy connected; the status writer puts
that count in the object's `Reconciled` condition. Here an object's generation is dated by the snapshot version
of the last push at or after the build that first held it (a build that pushes nothing leaves every proxy's
config as the last push made it), and a proxy holds that version once its connection served every push up to it
(`ConnectionStatus.idle_version`) and each type's last response is ACKed, or an ACKed one is of that version or
later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sailmesh.api.resource import ResourceKey
from sailmesh.server.connection import ConnectionStatus


def _base(version: str) -> int:
    """The snapshot version a response was stamped from ("7" and "7.2" are both 7); -1 for none."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def holds(conn: ConnectionStatus, version: int) -> bool:
    """Whether the proxy on `conn` holds the config of snapshot `version`: an ACK for every type (a NACK, a
    response not ACKed yet or a type the control plane failed to generate does not count)."""
    if _base(conn.idle_version) < version:
        return False
    return all(not t.error and (not t.sent_nonce or t.synced or _base(t.acked_version) >= version)
               for t in conn.types.values())


class DistributionTracker:
    """The snapshot version each tracked object's generation is distributed with (`built` after every build)."""

    def __init__(self, generation_of: Callable[[ResourceKey], int | None]) -> None:
        self.generation_of = generation_of  # the object's generation (the API server's), None when not tracked
        self._since: dict[ResourceKey, tuple[int, int]] = {}  # key -> (generation, snapshot version)
        self._pushed = 0

    def built(self, version: int, pushed: bool, keys: Iterable[ResourceKey]) -> None:
        """A snapshot `version` was built from a change of `keys` (every tracked key for a full change); `pushed`:
        it was pushed to the proxies."""
        if pushed or not self._pushed:
            self._pushed = version
        for key in keys:
            generation = self.generation_of(key)
            if generation is None:
                self._since.pop(key, None)
            elif key not in self._since or self._since[key][0] != generation:
                self._since[key] = (generation, self._pushed)

    def since(self, key: ResourceKey) -> tuple[int, int] | None:
        """(generation, snapshot version) of a tracked object."""
        return self._since.get(key)

    def progress(self, key: ResourceKey, conns: Iterable[ConnectionStatus],
                 counted: dict[int, int] | None = None) -> tuple[int, int] | None:
        """(proxies holding the object's current generation, proxies connected); None for an untracked object.
        `counted`: proxies holding each snapshot version, filled as found (objects of one version share the count:
        one pass over the proxies per version, not per object)."""
        found = self._since.get(key)
        if found is None:
            return None
        listed = conns if isinstance(conns, list) else list(conns)
        counts = counted if counted is not None else {}
        version = found[1]
        if version not in counts:
            counts[version] = sum(1 for c in listed if holds(c, version))
        return counts[version], len(listed)
