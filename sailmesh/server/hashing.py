"""Hashes of generated resources, shared by every connection so objects handed to many proxies hash once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def length_delimited(field_number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (string, bytes or message) in wire format."""
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


RESOURCES_FIELD = 2  # DiscoveryResponse.resources (repeated google.protobuf.Any)


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
        self._fields: OrderedDict[int, tuple[AnyProto, bytes]] = OrderedDict()
        self._bodies: OrderedDict[int, tuple[Mapping[str, AnyProto], bytes | None]] = OrderedDict()
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

    def encoded(self, resources: Mapping[str, AnyProto]) -> bytes:
        """`resources` in name order as DiscoveryResponse field 2, serialized once per mapping (and per Any).

        Proxies that share a mapping share the bytes; a response is these bytes plus its version, type URL
        and nonce fields (protobuf fields may come in any order), so nothing is copied or re-serialized per
        proxy.
        """
        key = id(resources)
        hit = self._bodies.get(key)
        if hit is not None and hit[0] is resources:
            self._bodies.move_to_end(key)
            if hit[1] is not None:
                return hit[1]
        body = b"".join(self._field(resources[n]) for n in sorted(resources))
        # Keep the bytes from the second use on: a mapping only one proxy gets (its clusters with its inbound
        # ones) is sent once per change anyway, and caching its megabytes per proxy would cost more than it saves.
        self._bodies[key] = (resources, body if hit is not None and hit[0] is resources else None)
        if len(self._bodies) > self.max_entries:
            self._bodies.popitem(last=False)
        return body

    def _field(self, anyp: AnyProto) -> bytes:
        key = id(anyp)
        hit = self._fields.get(key)
        if hit is not None and hit[0] is anyp:
            return hit[1]
        data = length_delimited(RESOURCES_FIELD, anyp.SerializeToString())
        self._fields[key] = (anyp, data)
        if len(self._fields) > self.max_entries * 16:
            self._fields.popitem(last=False)
        return data
