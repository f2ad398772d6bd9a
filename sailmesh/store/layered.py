"""A read view over several stores: files from disk under resources applied through the API."""

from __future__ import annotations

from collections.abc import Sequence

from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.store.base import ConfigStore, Rejections, Resources, sort_by_creation


class LayeredStore:
    """Later layers override earlier ones for the same key (kind, namespace, name).

    Watch each layer separately (the control plane pumps every layer's events); this view only reads.
    """

    def __init__(self, layers: Sequence[ConfigStore]) -> None:
        self.layers = list(layers)

    @property
    def revision(self) -> int:
        return sum(layer.revision for layer in self.layers)

    def list(self, kind: str | None = None) -> Resources:
        merged: dict[ResourceKey, Resource] = {}
        for layer in self.layers:
            for r in layer.list(kind):
                merged[r.key] = r
        return sort_by_creation(merged.values())

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        for layer in reversed(self.layers):
            found = layer.get(kind, namespace, name)
            if found is not None:
                return found
        return None

    def rejected(self) -> Rejections:
        return [r for layer in self.layers for r in layer.rejected()]
