"""Hashes of generated resources, shared by every connection so objects handed to many proxies hash once."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.any_pb2 import Any as AnyProto

from sailmesh.xds.wire import length_delimited as length_delimited


def digest_resources(resources: Mapping[str, AnyProto]) -> bytes:
    """A stable hash of a set of packed resources (their names, type URLs and serialized bytes).

    SHA-256 (first 16 bytes): with the CPU's SHA instructions it hashes ~2.5x faster than BLAKE2b here, and
    without Sidecar scoping every VirtualService change hashes each namespace's 2 MB route configuration.
    """
    h = hashlib.sha256()
    for name in sorted(resources):
        anyp = resources[name]
        value = anyp.value  # a copy each time it is read
        h.update(name.encode())
        h.update(b"\0")
        h.update(anyp.type_url.encode())
        h.update(b"\0")
        h.update(len(value).to_bytes(8, "little"))
        h.update(value)
    return h.digest()[:16]


RESOURCES_FIELD = 2  # DiscoveryResponse.resources (repeated google.protobuf.Any)


def resource_version(anyp: AnyProto) -> str:
    """The per-resource version used by delta xDS: a hash of the resource's bytes."""
    return hashlib.blake2b(anyp.value, digest_size=8).hexdigest()


class _Held:
    """A strong reference with the interface of weakref.ref (for mappings that cannot be weakly referenced)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


def _hold(obj: object, on_death: Callable[[], object]) -> Callable[[], object]:
    """A weak reference (the entry goes when the mapping dies: old snapshots' resources are not kept alive
    by the cache) where the type allows it, else a strong one (the id must not be reused while cached)."""
    try:
        return weakref.ref(obj, lambda _r: on_death())
    except TypeError:
        return _Held(obj)


class _Subset(dict[str, AnyProto]):
    """The resources of a mapping a proxy subscribed to by name; weakly referenceable, so the encoded-body
    cache lets go of it when the subset cache does (a plain dict was held until 4,096 newer ones came)."""

    __slots__ = ("__weakref__",)


def _put(cache: OrderedDict[Hashable, bytes], key: Hashable, data: bytes, held: int, limit: int) -> int:
    """Add to an LRU of bytes bounded by `limit` bytes (the newest entry stays); returns the bytes it now holds."""
    cache[key] = data
    held += len(data)
    while held > limit and len(cache) > 1:
        _, old = cache.popitem(last=False)
        held -= len(old)
    return held


# changed(): pairs of parts with this many resources or more (in the smaller) are compared once and remembered
_DIFF_MEMO_FROM = 256
_DIFF_MEMO_ENTRIES = 64
_SHARED_BYTES_ENTRIES = 256


def _differing(small: Mapping[str, AnyProto], large: Mapping[str, AnyProto]) -> frozenset[str]:
    """The names of `small` also in `large` with other bytes."""
    out = []
    for name, anyp in small.items():
        other = large.get(name)
        if other is not None and other is not anyp and (other.value != anyp.value or other.type_url != anyp.type_url):
            out.append(name)
    return frozenset(out)


def _updated_only(old: Mapping[str, AnyProto], new: Mapping[str, AnyProto]) -> frozenset[str] | None:
    """The names of `new` whose resources differ from `old`'s, or None when the two do not have the same names."""
    if len(old) != len(new):
        return None
    out = []
    for name, anyp in new.items():
        prev = old.get(name)
        if prev is None:
            return None
        if prev is not anyp and (prev.value != anyp.value or prev.type_url != anyp.type_url):
            out.append(name)
    return frozenset(out)


_Parts = Mapping[str, AnyProto]
T = TypeVar("T")


def _pair_memo(memo: OrderedDict[tuple[int, int], tuple[Callable[[], object], Callable[[], object], T]],
               a: _Parts, b: _Parts, compute: Callable[[_Parts, _Parts], T]) -> T:
    """compute(a, b), remembered for the pair (by identity, while both live) in a small LRU."""
    key = (id(a), id(b))
    hit = memo.get(key)
    if hit is not None and hit[0]() is a and hit[1]() is b:
        return hit[2]
    result = compute(a, b)
    drop = lambda: memo.pop(key, None)  # noqa: E731
    memo[key] = (_hold(a, drop), _hold(b, drop), result)
    while len(memo) > _DIFF_MEMO_ENTRIES:
        memo.popitem(last=False)
    return result


class HashCache:
    """LRU caches keyed by object identity; entries hold their object (weakly when it allows) so ids stay unique."""

    def __init__(self, max_entries: int = 4096, max_field_bytes: int = 64 * 2**20,
                 max_response_bytes: int = 64 * 2**20, max_body_bytes: int = 256 * 2**20,
                 max_probation_bytes: int = 8 * 2**20, max_cached_field: int = 64 * 2**10) -> None:
        self.max_entries = max_entries
        self.max_field_bytes = max_field_bytes
        self.max_cached_field = max_cached_field
        self._subsets: OrderedDict[tuple[int, frozenset[str] | None],
                                   tuple[Callable[[], object], Mapping[str, AnyProto] | None, bytes]]
        self._subsets = OrderedDict()
        self._versions: OrderedDict[int, tuple[AnyProto, str]] = OrderedDict()
        self._fields: OrderedDict[int, tuple[AnyProto, bytes]] = OrderedDict()
        self._field_bytes = 0
        self._bodies: OrderedDict[int, tuple[Callable[[], object], bytes | None]] = OrderedDict()
        self._body_bytes = 0
        self.max_body_bytes = max_body_bytes
        self._responses: OrderedDict[Hashable, bytes] = OrderedDict()
        self._response_bytes = 0
        self.max_response_bytes = max_response_bytes
        # responses built once and not (yet) asked for again: a few recent ones, bounded by bytes
        self._probation: OrderedDict[Hashable, bytes] = OrderedDict()
        self._probation_bytes = 0
        self._asked: OrderedDict[Hashable, None] = OrderedDict()  # keys built once (bytes kept or not)
        self._generation: object = None  # the source version of the responses kept (response())
        self.max_probation_bytes = max_probation_bytes
        self.hits = 0
        self.misses = 0
        # One frozenset per distinct subscription: the proxies of a scope ask for the same thousands of EDS names,
        # and each request brings new str objects; sharing them saves memory per proxy and re-hashing per push.
        self._names: weakref.WeakValueDictionary[frozenset[str], frozenset[str]] = weakref.WeakValueDictionary()
        # changed(): the names updated between two large parts, (old part, new part) -> names
        self._diffs: OrderedDict[tuple[int, int], tuple[Callable[[], object], Callable[[], object], frozenset[str]]]
        self._diffs = OrderedDict()
        self._sizes: OrderedDict[int, tuple[Callable[[], object], int]] = OrderedDict()  # size()
        self._shared: OrderedDict[bytes, bytes] = OrderedDict()  # shared()
        # updated_only(): (old part, new part) -> the names updated, None when names came or went
        self._updates: OrderedDict[tuple[int, int],
                                   tuple[Callable[[], object], Callable[[], object], frozenset[str] | None]]
        self._updates = OrderedDict()

    def changed(self, old: Sequence[Mapping[str, AnyProto]], new: Sequence[Mapping[str, AnyProto]]) -> set[str]:
        """Names in both the `old` and the `new` parts whose resources differ (updated, not added or removed).
        A part present in both (the same object) has not changed; a large pair of parts is compared once for
        every proxy that holds it (the proxies of a scope share their outbound clusters)."""
        out: set[str] = set()
        gone = [p for p in old if not any(p is q for q in new)]
        for part in new:
            if any(part is q for q in old):
                continue
            for prev in gone:
                out |= self._diff(prev, part)
        return out

    def updated_only(self, old: Sequence[Mapping[str, AnyProto]],
                     new: Sequence[Mapping[str, AnyProto]]) -> frozenset[str] | None:
        """The names whose resources differ between `old` and `new` when that is all that differs (the same names
        in both, one part replaced by one other); None when names were added or removed, or several parts changed.
        A pair of parts is compared once for every proxy holding it."""
        gone = [p for p in old if not any(p is q for q in new)]
        came = [p for p in new if not any(p is q for q in old)]
        if not gone and not came:
            return frozenset()
        if len(gone) != 1 or len(came) != 1:
            return None
        return _pair_memo(self._updates, gone[0], came[0], _updated_only)

    def _diff(self, a: Mapping[str, AnyProto], b: Mapping[str, AnyProto]) -> frozenset[str]:
        small, large = (a, b) if len(a) <= len(b) else (b, a)
        if len(small) < _DIFF_MEMO_FROM:
            return _differing(small, large)
        return _pair_memo(self._diffs, a, b, lambda _a, _b: _differing(small, large))

    def names(self, names: Iterable[str]) -> frozenset[str]:
        """The names without `*` as the one frozenset with those names that this cache's connections share."""
        if isinstance(names, frozenset) and self._names.get(names) is names:
            return names
        fs = frozenset(n for n in names if n != "*")
        return self._names.setdefault(fs, fs)

    def subset(
        self, resources: Mapping[str, AnyProto], names: frozenset[str] | None
    ) -> tuple[Mapping[str, AnyProto], bytes]:
        """The resources named (all for None) and their digest."""
        key = (id(resources), names)
        hit = self._subsets.get(key)
        if hit is not None and hit[0]() is resources:
            self.hits += 1
            self._subsets.move_to_end(key)
            return (resources if hit[1] is None else hit[1]), hit[2]
        self.misses += 1
        chosen = resources if names is None else _Subset((n, resources[n]) for n in names if n in resources)
        digest = digest_resources(chosen)
        # the whole mapping is not stored again as the subset (that would keep it alive)
        self._subsets[key] = (_hold(resources, lambda: self._subsets.pop(key, None)),
                              None if chosen is resources else chosen, digest)
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
        seen = hit is not None and hit[0]() is resources
        if seen and hit is not None:
            self._bodies.move_to_end(key)
            if hit[1] is not None:
                return hit[1]
        if hit is not None and not seen:
            self._drop_body(key)
            hit = None
        body = b"".join(self._field(resources[n]) for n in sorted(resources))
        # Keep the bytes from the second use on: a mapping only one proxy gets (its clusters with its inbound
        # ones) is sent once per change anyway, and caching its megabytes per proxy would cost more than it saves.
        # A mapping of one large resource (a namespace's route configuration without Sidecar scoping: 5.4 MB at
        # 5,000 services) is not kept either: encoding it again is one copy of its bytes, and while the version
        # lasts its proxies get the shared response. Kept, 100 namespaces' routes filled the cache's 256 MB bound
        # beside their Anys and responses (the 5,000 / 2,000 run).
        keep = seen and not (len(resources) == 1 and len(body) > self.max_cached_field)
        holder = hit[0] if seen and hit is not None else _hold(resources, lambda: self._drop_body(key))
        if keep:
            self._body_bytes += len(body)
        self._bodies[key] = (holder, body if keep else None)
        while len(self._bodies) > 1 and (len(self._bodies) > self.max_entries
                                         or self._body_bytes > self.max_body_bytes):
            self._drop_body(next(iter(self._bodies)))
        return body

    def _drop_body(self, key: int) -> None:
        entry = self._bodies.pop(key, None)
        if entry is not None and entry[1] is not None:
            self._body_bytes -= len(entry[1])

    def response(self, key: Hashable, build: Callable[[], bytes], generation: object = None) -> bytes:
        """A whole serialized response, shared by the proxies that get it (same type, version and resources).

        `generation`: the source version the response is stamped from, when it is the source's current one.
        Response versions never repeat, so once a newer generation's response is asked for no older one can be:
        the cache keeps the current generation's responses only (it kept 64 MB of responses nobody could ask for
        after 40 changes at 1,000 services / 500 proxies, e.g. every namespace's routes of the last VirtualService
        change after endpoint changes had moved the version on).

        A response enters the shared cache (bounded by bytes) when a second proxy asks for it; until then its
        key is remembered and its bytes wait in a small probation cache of recent ones (the proxies of a scope
        ask within one push, so the second usually gets the first one's object). Without Sidecar scoping every
        proxy's clusters response is its own (its inbound cluster) and megabytes large: keeping those filled
        the shared cache with responses nobody asked for again (0.13 MB per proxy at 1,000 services / 500).
        """
        if generation is not None and generation != self._generation:
            self._generation = generation
            self._drop_responses()
        hit = self._responses.get(key)
        if hit is not None:
            self._responses.move_to_end(key)
            return hit
        data = self._probation.pop(key, None)
        if data is not None:
            self._probation_bytes -= len(data)
        elif key not in self._asked:
            data = build()
            self._asked[key] = None
            if len(self._asked) > self.max_entries:
                self._asked.popitem(last=False)
            self._probation_bytes = _put(self._probation, key, data, self._probation_bytes, self.max_probation_bytes)
            return data
        else:
            data = build()  # asked for before, its bytes gone from probation: shared from now on
        self._asked.pop(key, None)
        self._response_bytes = _put(self._responses, key, data, self._response_bytes, self.max_response_bytes)
        return data

    def quiet(self) -> None:
        """The pushes have gone quiet (controlplane/trim.py's IdleTrim, before it trims): forget the responses.

        They are shared by the proxies a push answers; once it is over they are a second copy of what the
        generator's cache holds as `Any`s (without Sidecar scoping each namespace's route configuration, 1.1 MB at
        1,000 services, 5.4 MB at 5,000) until the version moves on. A proxy that asks later at the same version
        gets a response built again, once: the second to ask shares it again. Encoded fields and bodies, parts of
        the next push's responses, stay."""
        self._drop_responses()

    def _drop_responses(self) -> None:
        """Forget every response (shared, on probation, or only asked for once)."""
        self._responses.clear()
        self._probation.clear()
        self._asked.clear()
        self._response_bytes = self._probation_bytes = 0

    def shared(self, data: bytes) -> bytes:
        """One bytes object for equal bytes kept by many connections (the names part of 500 proxies' EDS ACKs,
        150 kB each without Sidecar scoping); the most recent distinct values only."""
        hit = self._shared.get(data)
        if hit is not None:
            self._shared.move_to_end(data)
            return hit
        self._shared[data] = data
        while len(self._shared) > _SHARED_BYTES_ENTRIES:
            self._shared.popitem(last=False)
        return data

    def peek(self, key: Hashable) -> bytes | None:
        """The response cached under `key` (shared or on probation), without counting it as asked for."""
        hit = self._responses.get(key)
        return hit if hit is not None else self._probation.get(key)

    def size(self, resources: Mapping[str, AnyProto]) -> int:
        """About the bytes encoded() makes of `resources` (their Any bytes and tags), without encoding them."""
        key = id(resources)
        hit = self._sizes.get(key)
        if hit is not None and hit[0]() is resources:
            return hit[1]
        n = sum(len(a.value) + len(a.type_url) + 16 for a in resources.values())
        self._sizes[key] = (_hold(resources, lambda: self._sizes.pop(key, None)), n)
        while len(self._sizes) > self.max_entries:
            self._sizes.popitem(last=False)
        return n

    def held_bytes(self) -> int:
        """The bytes this cache holds: encoded resources (with the Anys they keep alive), bodies and responses."""
        return self._field_bytes + self._body_bytes + self._response_bytes + self._probation_bytes

    def _field(self, anyp: AnyProto) -> bytes:
        key = id(anyp)
        hit = self._fields.get(key)
        if hit is not None and hit[0] is anyp:
            return hit[1]
        data = length_delimited(RESOURCES_FIELD, anyp.SerializeToString())
        if len(data) > self.max_cached_field:
            # A large resource (a route configuration of every service: megabytes without Sidecar scoping) is a
            # copy of its bytes to serialize, and ends up in a body or a shared response anyway: not kept here.
            return data
        self._fields[key] = (anyp, data)
        self._field_bytes += len(data) + len(anyp.value)
        while self._field_bytes > self.max_field_bytes and len(self._fields) > 1:  # bounded by bytes held
            _, (old, old_data) = self._fields.popitem(last=False)
            self._field_bytes -= len(old_data) + len(old.value)
        return data
