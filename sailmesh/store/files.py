"""A watched directory of YAML as a ConfigStore: per-file all-or-nothing, last valid version kept in force."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import watchfiles

from sailmesh.api.parse import iter_files, load_file
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.errors import ConfigError, ParseError
from sailmesh.store.base import (
    ApplyResult,
    Rejection,
    Rejections,
    Resources,
    StoreIssue,
    Subscription,
    Validator,
    no_validation,
)
from sailmesh.store.memory import MemoryStore

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 8 * 1024 * 1024
Signature = tuple[int, int, int]  # (mtime_ns, size, inode) of the file a path resolves to


@dataclass(frozen=True)
class _FileState:
    """One file: its signature when read, the resources in force from it, and why its latest read was refused."""

    signature: Signature | None
    resources: tuple[Resource, ...] = ()
    rejection: Rejection | None = None


@dataclass
class _Plan:
    """The result of a scan (computed off the event loop), applied on the loop."""

    files: dict[str, _FileState] = field(default_factory=dict)
    reloaded: list[str] = field(default_factory=list)


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileStore:
    """Config from a directory (a git checkout works as-is: dot-directories such as .git are skipped).

    Files are read in path order. A file with any unreadable or invalid document keeps its previous
    resources in force and is listed by rejected(); when two files define the same resource the
    first file (in path order) wins and the other is reported. Start with `await start()`.
    """

    def __init__(
        self,
        root: str,
        validator: Validator = no_validation,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        rescan_ms: int = 2000,
        debounce_ms: int = 200,
    ) -> None:
        self.root = os.path.abspath(root)
        self.validator = validator
        self.max_file_bytes = max_file_bytes
        self.rescan_ms = rescan_ms
        self.debounce_ms = debounce_ms
        self._mem = MemoryStore(validator)
        self._files: dict[str, _FileState] = {}
        self._owner: dict[ResourceKey, str] = {}  # key -> file whose version is in force
        self._duplicates: list[Rejection] = []
        self._lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once the watcher runs and a rescan after it has completed
        self.scans = 0
        self.watch_failures = 0  # consecutive failures to watch the directory (it is missing, ...)

    # -- ConfigStore ------------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._mem.revision

    def list(self, kind: str | None = None) -> Resources:
        return self._mem.list(kind)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self._mem.get(kind, namespace, name)

    def watch(self) -> Subscription:
        return self._mem.watch()

    def rejected(self) -> Rejections:
        files = [s.rejection for _, s in sorted(self._files.items()) if s.rejection is not None]
        return files + list(self._duplicates)

    def file_of(self, key: ResourceKey) -> str:
        """The file the resource in force was read from ("" if none)."""
        return self._owner.get(key, "")

    # -- lifecycle --------------------------------------------------------------------------------
    def load(self) -> ApplyResult:
        """Scan the directory now, synchronously (CLI use; the async path is start/sync)."""
        if not os.path.exists(self.root):
            raise ConfigError(f"config directory {self.root} does not exist")
        return self._apply(self._scan(set()))

    async def sync(self, changed: Iterable[str] = ()) -> ApplyResult:
        """Rescan now (files whose signature changed, plus `changed`), off the event loop."""
        async with self._lock:
            plan = await asyncio.to_thread(self._scan, {os.path.abspath(p) for p in changed})
            return self._apply(plan)

    async def start(self) -> None:
        """Initial load, then watch the directory in a background task."""
        if not os.path.exists(self.root):
            raise ConfigError(f"config directory {self.root} does not exist")
        await self.sync()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"filestore:{self.root}")

    async def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await self._watch_once()
                self.watch_failures = 0
            except (OSError, RuntimeError) as e:
                # The directory vanished or the watcher failed: keep serving the last config, retry later.
                self.watch_failures += 1
                level = logging.WARNING if self.watch_failures == 1 else logging.DEBUG
                log.log(level, "watching config directory %s failed (%s); keeping the last config", self.root, e)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.rescan_ms / 1000):
                        await self._stop.wait()

    async def _watch_once(self) -> None:
        assert self._stop is not None
        async for events in watchfiles.awatch(
            self.root,
            stop_event=self._stop,
            debounce=max(self.debounce_ms, 1),
            step=min(50, max(self.debounce_ms, 1)),
            rust_timeout=self.rescan_ms,
            yield_on_timeout=True,
        ):
            try:
                # Events name the files that changed; a periodic rescan (empty set on timeout) catches
                # what events miss: changes before the watcher started, symlink swaps, odd filesystems.
                await self.sync(path for _, path in events)
            except OSError as e:  # the directory itself went away or became unreadable: keep serving
                log.warning("config directory %s: %s; keeping the last config", self.root, e)
            if not self.ready.is_set():
                self.ready.set()

    # -- scanning (runs in a worker thread: reads files, never touches the memory store) ------------
    def _scan(self, force: set[str]) -> _Plan:
        self.scans += 1
        if not os.path.exists(self.root):  # unmounted or being replaced: never read that as "delete everything"
            raise FileNotFoundError(f"config directory {self.root} does not exist")
        plan = _Plan()
        for path in iter_files(self.root):
            path = os.path.abspath(path)
            sig = _signature(path)
            old = self._files.get(path)
            if old is not None and sig is not None and old.signature == sig and path not in force:
                plan.files[path] = old
                continue
            if sig is None and old is None:
                continue  # vanished while scanning
            plan.files[path] = self._read(path, sig, old)
            plan.reloaded.append(path)
        return plan

    def _read(self, path: str, sig: Signature | None, old: _FileState | None) -> _FileState:
        kept = old.resources if old else ()
        errors: list[object] = []
        resources: list[Resource] = []
        if sig is None:
            errors.append(ParseError("cannot read: file disappeared or is not accessible", file=path))
        elif sig[1] > self.max_file_bytes:
            errors.append(ParseError(f"file too large ({sig[1]} bytes, limit {self.max_file_bytes})", file=path))
        else:
            loaded = load_file(path)
            errors.extend(loaded.errors)
            resources = loaded.resources
            seen: dict[ResourceKey, Resource] = {}
            for r in resources:
                if r.key in seen and r.name:
                    errors.append(
                        StoreIssue(r.key, "", f"defined twice in this file (first at line {seen[r.key].source.line})",
                                   path, r.source.line)
                    )
                seen.setdefault(r.key, r)
            try:
                errors.extend(self._mem.check(resources))
            except Exception as e:  # a validator bug must not take the store down: reject the file
                log.exception("validator failed on %s", path)
                errors.append(ParseError(f"validator failed: {type(e).__name__}: {e}", file=path))
        if errors:
            rejection = Rejection(path, None, tuple(errors), kept=bool(kept))
            log.warning("%s", rejection)
            return _FileState(sig, kept, rejection)
        return _FileState(sig, tuple(resources), None)

    # -- applying (on the event loop) --------------------------------------------------------------
    def _apply(self, plan: _Plan) -> ApplyResult:
        if not plan.reloaded and plan.files.keys() == self._files.keys():
            # The periodic rescan found every file as it was (plan.files holds the same states): nothing to do.
            # Re-applying 3,000 resources held the event loop for 150-400 ms every 2 s (pushes waited behind it).
            return ApplyResult(revision=self._mem.revision)
        winners: dict[ResourceKey, tuple[str, Resource]] = {}
        duplicates: list[Rejection] = []
        for path, state in plan.files.items():
            for r in state.resources:
                first = winners.get(r.key)
                if first is None:
                    winners[r.key] = (path, r)
                elif first[0] != path:
                    issue = StoreIssue(r.key, "", f"duplicate: already defined in {first[0]}", path, r.source.line)
                    duplicates.append(Rejection(path, r.key, (issue,)))
        for d in duplicates:
            if d not in self._duplicates:
                log.warning("%s", d)
        previous = {k: self._mem.get(k.kind, k.namespace, k.name) for k in self._mem.keys()}
        upserts = [r for k, (_, r) in winners.items() if previous.get(k) is not r]
        deletes = [k for k in previous if k not in winners]
        self._files = plan.files
        self._duplicates = duplicates
        self._owner = {k: p for k, (p, _) in winners.items()}
        result = self._mem.commit(upserts, deletes)
        # The memory store re-stamps metadata: remember its objects so unchanged files are not re-sent.
        for path, state in list(self._files.items()):
            if state.resources:
                in_force = tuple(
                    self._mem.get(r.kind, r.namespace, r.name) or r if self._owner.get(r.key) == path else r
                    for r in state.resources
                )
                self._files[path] = _FileState(state.signature, in_force, state.rejection)
        if plan.reloaded:
            log.debug("reloaded %d file(s), revision %d", len(plan.reloaded), result.revision)
        return result

