"""Memos: generated pieces reused across proxies and snapshots while their inputs are the same objects.

One `Memos` belongs to one `Generator` (the control plane has one), lives as long as it and is passed to the
builders that use it; nothing here is module state. Entries are keyed by the identity of their inputs and hold
those inputs, so an id is never reused while its entry lives. Values are shared: treat them as immutable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class IdentityMemo:
    """A bounded LRU memo keyed by the identity of its inputs; it holds them, so their ids are not reused meanwhile."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple[object, ...], Any]] = OrderedDict()

    def get(self, key: Hashable, held: tuple[object, ...]) -> Any:
        """The value stored under key for exactly these held objects, else None."""
        hit = self._entries.get(key)
        if hit is None or len(hit[0]) != len(held) or not all(a is b for a, b in zip(hit[0], held, strict=True)):
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: Hashable, held: tuple[object, ...], value: Any) -> None:
        self._entries[key] = (held, value)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Memos:
    """The generators' memos, one per Generator.

    - `clusters`: an outbound cluster, packed, per (port, subset, its service, DestinationRule, endpoints, mesh,
      mesh config);
      it does not depend on the proxy, so every scope and snapshot with the same inputs shares it.
    - `assignments`: a ClusterLoadAssignment, packed, per (cluster name, endpoints tuple, subset labels).
    - `routes`: a service port's serialized routes and virtual hosts per what they read from the proxy
      (routes._memo_entry: its namespace's DestinationRules, or its outbound key when a match reads the client).
    - `domains`: a service port's virtual host domains, per "proxy in the service's namespace or not".
    - `envoy_filters`: an EnvoyFilter's patches with their values built, per resource.
    - `patched`: a proxy's resources of one type with its EnvoyFilter patches applied, per (parts, patches).
    - `route_scopes`: per outbound key, the service virtual hosts its route configurations were last assembled
      from (routes.ScopeRoutes): a VirtualService change rebuilds its own hosts' only.
    - `endpoint_scopes`: per outbound key, the assignments it was last built from (endpoints.ScopeEndpoints): an
      endpoint change re-assembles the changed services' only.
    - `changes`: what differs between two snapshots' inputs, found once for every scope that asks (the hosts whose
      endpoints changed between two endpoint maps; the VirtualServices changed between two lists of them).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.clusters = IdentityMemo(max_entries)
        self.assignments = IdentityMemo(max_entries)
        self.routes: OrderedDict[tuple[object, ...], Any] = OrderedDict()
        self.domains = IdentityMemo(max_entries)
        self.envoy_filters = IdentityMemo(10_000)
        self.patched = IdentityMemo(10_000)
        self.max_entries = max_entries
        self.route_scopes: OrderedDict[Hashable, Any] = OrderedDict()
        self.max_scopes = 4096
        self.scope_inserts = 0
        self.endpoint_scopes: OrderedDict[Hashable, Any] = OrderedDict()
        self.endpoint_inserts = 0
        self.changes = IdentityMemo(8)  # (what, id(old), id(new)) holding (old, new)
        self._route_inserts = 0

    def routes_inserted(self, currency: Callable[[], Callable[[Any], bool]]) -> None:
        """After an insert into `routes`: now and then (after len/8 + 64 inserts, so the sweeps cost O(1) per
        insert) drop the entries that `currency()` says hold superseded inputs. Their keys hold the ids of those
        inputs, so they can never match again; kept, every config change would leave one behind (its
        VirtualService, parsed YAML and serialized routes) until max_entries: the soak's growth (issue 13)."""
        self._route_inserts += 1
        if self._route_inserts < len(self.routes) // 8 + 64:
            return
        self._route_inserts = 0
        current = currency()
        for key in [k for k, entry in self.routes.items() if not current(entry)]:
            del self.routes[key]


def same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    """The same objects, position by position (what a memo was built from, unchanged)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
