"""Hashes of generated resources, shared by every connection so objects handed to many proxies hash once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.any_pb2 import Any as AnyProto


def digest_resources(resources: Mapping[str, AnyProto]) -> bytes:
    """A stable hash of a set of packed resources (their names, type URLs and serialized bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(resources):
        anyp = resources[name]
        h.update(name.encode())
        h.update(b"\0")
        h.update(anyp.type_url.encode())
        h.update(b"\0")
        h.update(len(anyp.value).to_bytes(8, "little"))
        h.update(anyp.value)
    return h.digest()


def resource_version(anyp: AnyProto) -> str:
    """The per-resource version used by delta xDS: a hash of the resource's bytes."""
    return hashlib.blake2b(anyp.value, digest_size=8).hexdigest()


class HashCache:
    """LRU caches keyed by object identity (the cached object is held, so an id is never reused while cached)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._subsets: OrderedDict[tuple[int, frozenset[str] | None], tuple[object, Mapping[str, AnyProto], bytes]]
        self._subsets = OrderedDict()
        self._versions: OrderedDict[int, tuple[AnyProto, str]] = OrderedDict()
        self._bodies: OrderedDict[bytes, bytes] = OrderedDict()
        self.max_bodies = 128
        self.hits = 0
        self.misses = 0

    def subset(
        self, resources: Mapping[str, AnyProto], names: frozenset[str] | None
    ) -> tuple[Mapping[str, AnyProto], bytes]:
        """The resources named (all for None) and their digest."""
        key = (id(resources), names)
        hit = self._subsets.get(key)
        if hit is not None and hit[0] is resources:
            self.hits += 1
            self._subsets.move_to_end(key)
            return hit[1], hit[2]
        self.misses += 1
        chosen = resources if names is None else {n: resources[n] for n in names if n in resources}
        digest = digest_resources(chosen)
        self._subsets[key] = (resources, chosen, digest)
        if len(self._subsets) > self.max_entries:
            self._subsets.popitem(last=False)
        return chosen, digest

    def version(self, anyp: AnyProto) -> str:
        """resource_version(anyp), computed once per Any object."""
        key = id(anyp)
        hit = self._versions.get(key)
        if hit is not None and hit[0] is anyp:
            self._versions.move_to_end(key)
            return hit[1]
        version = resource_version(anyp)
        self._versions[key] = (anyp, version)
        if len(self._versions) > self.max_entries * 16:
            self._versions.popitem(last=False)
        return version

    def body(self, digest: bytes, resources: Mapping[str, AnyProto]) -> bytes:
        """The serialized `resources` field of a DiscoveryResponse (sorted by name), built once per digest.

        Protobuf fields may come in any order and concatenated encodings merge, so a response is
        `header + body` where the small header carries version, type URL and nonce: proxies that get the
        same resources share one serialization.
        """
        hit = self._bodies.get(digest)
        if hit is not None:
            self._bodies.move_to_end(digest)
            return hit
        msg = discovery_pb2.DiscoveryResponse()
        msg.resources.extend(resources[n] for n in sorted(resources))
        body = msg.SerializeToString()
        self._bodies[digest] = body
        if len(self._bodies) > self.max_bodies:
            self._bodies.popitem(last=False)
        return body
