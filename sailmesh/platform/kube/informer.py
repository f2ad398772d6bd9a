"""List + watch of one resource, as client-go's reflector does it: list, then watch from the list's
resourceVersion with bookmarks; a 410 Gone (the version was compacted away) re-lists; errors back off.

The handler sees a whole list (`replace`: the complete current set, after the first list and after every
re-list) and single events (`upsert`, `delete`). Objects are the API server's JSON as dicts, with `kind` and
`apiVersion` filled in (list items omit them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2 as httpx

from sailmesh.platform.kube.client import Gone, KubeApiError, KubeConnection, api_error

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass(frozen=True)
class KubeResource:
    """Where a resource lives in the API: group ("" for core), version, plural, kind, namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        """The collection path (all namespaces, or one), or one object's path."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{namespace}" if namespace and self.namespaced else ""
        return f"{base}{ns}/{self.plural}" + (f"/{name}" if name else "")


class Handler(Protocol):
    """Receives what an informer sees."""

    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        """The complete current set of this resource (first list, or a re-list after 410)."""

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        """An object was added or modified."""

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        """An object was deleted (its last state)."""


@dataclass
class BackOff:
    """Exponential back-off with jitter between failed list/watch attempts (client-go: 800ms .. 30s)."""

    initial_s: float = 0.8
    max_s: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        base = min(self.max_s, self.initial_s * 2 ** (self.failures - 1))
        return float(base * (0.5 + random.random() / 2))

    def reset(self) -> None:
        self.failures = 0


@dataclass
class InformerStats:
    """What an informer did (for logs, /debug and tests)."""

    lists: int = 0
    relists_gone: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class Informer:
    """Keeps a handler in step with one resource; `run()` until cancelled, `synced` set after the first list.

    The resourceVersion survives a cancelled `run()`: running it again resumes the watch where it stopped
    (and re-lists if the server no longer has that version).
    """

    conn: KubeConnection
    resource: KubeResource
    handler: Handler
    namespace: str = ""
    field_selector: str = ""
    label_selector: str = ""
    watch_timeout_s: int = 300  # the server ends each watch after this; the informer starts the next one
    backoff: BackOff = field(default_factory=BackOff)
    resource_version: str = ""
    stats: InformerStats = field(default_factory=InformerStats)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def _selectors(self) -> dict[str, str]:
        p: dict[str, str] = {}
        if self.field_selector:
            p["fieldSelector"] = self.field_selector
        if self.label_selector:
            p["labelSelector"] = self.label_selector
        return p

    async def run(self) -> None:
        """List and watch for ever: re-list on 410 Gone, back off on any other failure."""
        while True:
            try:
                if not self.resource_version:
                    await self.list_now()
                await self._watch()
                self.backoff.reset()
            except Gone as e:
                self.stats.relists_gone += 1
                log.info("%s: %s; re-listing", self.resource.plural, e)
                self.resource_version = ""
            except Exception as e:  # any failure (even a handler's bug) backs off and retries
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                if not isinstance(e, (KubeApiError, httpx.HTTPError, OSError, ValueError)):
                    log.exception("%s: unexpected failure", self.resource.plural)
                delay = self.backoff.next_delay()
                log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.resource.plural,
                            self.stats.last_error, delay)
                await asyncio.sleep(delay)

    async def list_now(self) -> None:
        """One consistent list (paged): hands the complete set to the handler and remembers its version."""
        items: list[Obj] = []
        params = {**self._selectors(), "limit": "500"}
        rv = ""
        while True:
            body = await self.conn.get_json(self.resource.path(self.namespace), params)
            items.extend(self._typed(i) for i in body.get("items") or () if isinstance(i, dict))
            meta = body.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            token = meta.get("continue")
            if not token:
                break
            params["continue"] = str(token)
        self.stats.lists += 1
        self.handler.listed(self.resource, items)
        self.resource_version = rv
        self.synced.set()

    async def _watch(self) -> None:
        params = {**self._selectors(), "watch": "1", "allowWatchBookmarks": "true",
                  "resourceVersion": self.resource_version, "timeoutSeconds": str(self.watch_timeout_s)}
        self.stats.watches += 1
        async for line in self.conn.stream_lines(self.resource.path(self.namespace), params, self.watch_timeout_s):
            self.handle_event(json.loads(line))
            self.backoff.reset()

    def handle_event(self, event: Mapping[str, Any]) -> None:
        """One watch event: ADDED/MODIFIED/DELETED to the handler, BOOKMARK moves the version, ERROR raises."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {event!r}")
        if kind == "ERROR":
            raise api_error(int(obj.get("code") or 500), obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            self.stats.events += 1
            self.handler.upserted(self.resource, self._typed(obj))
        elif kind == "DELETED":
            self.stats.events += 1
            self.handler.deleted(self.resource, self._typed(obj))
        else:
            raise ValueError(f"unknown watch event type {kind!r}")
        if rv:
            self.resource_version = rv

    def _typed(self, obj: Obj) -> Obj:
        obj.setdefault("kind", self.resource.kind)
        obj.setdefault("apiVersion", self.resource.api_version)
        return obj
