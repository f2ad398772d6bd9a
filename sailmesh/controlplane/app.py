"""The control-plane process: stores + registry -> debounce -> snapshot -> generators -> ADS push."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import watchfiles
from aiohttp import web
from google.protobuf import json_format

from sailmesh.api.change import Change
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, Source
from sailmesh.api.validate import errors_only, validate
from sailmesh.controlplane.debounce import Debouncer
from sailmesh.controlplane.http_api import make_app
from sailmesh.controlplane.source import MeshSource
from sailmesh.errors import GenerationError, ParseError, RegistryError, SailmeshError, ValidationError
from sailmesh.generate.affect import push_request
from sailmesh.metrics import CitadelMetrics, Registry
from sailmesh.platform import workload_file
from sailmesh.registry.aggregate import AggregateRegistry
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.server.ads import AdsServer
from sailmesh.server.metrics import XdsMetrics
from sailmesh.settings import Settings
from sailmesh.snapshot.build import build
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.store.base import Validator
from sailmesh.store.files import FileStore
from sailmesh.store.layered import LayeredStore
from sailmesh.store.memory import MemoryStore
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_name

log = logging.getLogger("sailmesh.controlplane")


def rejecting_issues(resource: Resource) -> list[object]:
    """Istio's validation, errors only: warnings (deprecated fields, ...) never keep config out."""
    return list(errors_only(validate(resource)))


@dataclass
class ControlPlaneOptions:
    """Where the control plane reads config and listens."""

    config_dirs: Sequence[str] = ()
    workload_file: str = ""
    host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014


class ControlPlane:
    """One control plane. start() loads everything and serves; stop() ends streams (proxies keep config)."""

    def __init__(self, opts: ControlPlaneOptions, settings: Settings, validator: Validator | None = None) -> None:
        self.opts = opts
        self.settings = settings
        # One registry for every control-plane metric (pilot_*, galley_*, citadel_*, sailmesh_*), on :15014/metrics.
        self.metrics = Registry()
        self.xds_metrics = XdsMetrics(self.metrics)
        self.citadel_metrics = CitadelMetrics(self.metrics)  # the CA increments these as it signs
        self._validation_failed = self.metrics.counter(
            "galley_validation_failed", "Resource validation failed.", ["group", "version", "resource", "reason"])
        self.metrics.gauge("sailmesh_snapshot_version", "Version of the mesh snapshot being served.").set_function(
            lambda: self.snapshot.version if self.snapshot else 0)
        self._validate = validator or rejecting_issues
        self.validator: Validator = self._counted_validation
        self.files = [FileStore(d, self.validator) for d in opts.config_dirs]
        self.memory = MemoryStore(self.validator)
        self.store = LayeredStore([*self.files, self.memory])
        self.registry = AggregateRegistry(LocalRegistry())  # local workloads; Kubernetes joins as a source
        self.snapshot: MeshSnapshot | None = None
        self.source: MeshSource | None = None
        self.server: AdsServer | None = None
        self.debouncer: Debouncer[Change] = Debouncer(self._push, Change.merge, settings.debounce)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._ready = False
        self.started_at = time.time()
        self.pushes = 0
        self._logged_rejections: set[str] = set()
        self._mounts: dict[str, Callable[[ControlPlane], web.Application]] = {}

    def mount(self, prefix: str, factory: Callable[[ControlPlane], web.Application]) -> None:
        """Serve factory(self) under prefix on the HTTP port (the dashboard, a higher layer); before start()."""
        self._mounts[prefix] = factory

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        for fs in self.files:
            await fs.start()
        self._load_workloads()
        self.snapshot = build(None, self.store, self.registry, Change.everything(), self.settings.mesh)
        self.source = MeshSource(self.snapshot)
        self.server = AdsServer(self.source, self.xds_metrics)
        self.opts.xds_port = await self.server.serve(self.opts.host, self.opts.xds_port)
        for sub in [*(fs.watch() for fs in self.files), self.memory.watch(), self.registry.watch()]:
            self._tasks.append(asyncio.create_task(self._pump(sub)))
        if self.opts.workload_file:
            self._tasks.append(asyncio.create_task(self._watch_workload_file()))
        self.debouncer.start()
        mounts = {prefix: factory(self) for prefix, factory in self._mounts.items()}
        self._runner = web.AppRunner(make_app(self, mounts), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.opts.host, self.opts.http_port)
        await site.start()
        self._ready = True
        log.info("control plane ready: xDS %s:%d, HTTP %s:%d, %d resources, %d services, %d workloads",
                 self.opts.host, self.opts.xds_port, self.opts.host, self.opts.http_port,
                 sum(len(v) for v in self.snapshot.config.values()), len(self.snapshot.services),
                 len(self.snapshot.workloads))
        self._log_rejections()

    async def stop(self) -> None:
        self._ready = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.debouncer.close()
        if self.server is not None:
            await self.server.stop(0)
        for fs in self.files:
            await fs.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- change flow ------------------------------------------------------------------------------
    async def _pump(self, changes: AsyncIterator[Change]) -> None:
        async for change in changes:
            self.debouncer.submit(change)

    async def _push(self, change: Change) -> None:
        assert self.snapshot is not None and self.source is not None and self.server is not None
        prev = self.snapshot
        cur = build(prev, self.store, self.registry, change, self.settings.mesh)
        request = push_request(change, prev, cur)
        self.snapshot = cur
        self.source.update(cur, request)
        if request is not None:
            self.pushes += 1
            self.server.push(request)
            log.info("push v%d (%s): %s", cur.version, request.reason,
                     ",".join(sorted(short_name(t) for t in request.type_urls or ())) or "all")
        self._log_rejections()

    def _log_rejections(self) -> None:
        """Log each rejection once, when it first appears (a file fixed and broken again logs again)."""
        current = {str(r) for r in self.store.rejected()}
        for text in sorted(current - self._logged_rejections):
            log.warning("rejected: %s", text)
        self._logged_rejections = current

    # -- local workloads --------------------------------------------------------------------------
    def _load_workloads(self) -> None:
        """Register what the workload file declares now (start-up: before the first snapshot)."""
        wanted = self._read_workloads()
        if wanted is not None:
            self._apply_workloads(wanted)

    def _read_workloads(self) -> dict[tuple[str, str], Workload] | None:
        if not self.opts.workload_file:
            return None
        try:
            return {(w.namespace, w.name): w for w in workload_file.read(self.opts.workload_file)}
        except RegistryError as e:
            log.error("%s", e)
            return None

    def _apply_workloads(self, wanted: dict[tuple[str, str], Workload]) -> None:
        """Make the registry hold exactly `wanted`; unchanged workloads publish nothing."""
        for w in self.registry.local.workloads():  # the file declares local workloads only
            if (w.namespace, w.name) not in wanted:
                self.registry.local.unregister(w.name, w.namespace)
        for w in wanted.values():
            self.registry.local.register(w)

    async def _watch_workload_file(self) -> None:
        path = os.path.abspath(self.opts.workload_file)
        folder = os.path.dirname(path)
        # The platform replaces the file atomically (os.replace), so one event is one complete file: a short
        # debounce (every millisecond here is convergence time), and the parse off the event loop.
        async for _ in watchfiles.awatch(folder, watch_filter=lambda _c, p: os.path.abspath(p) == path,
                                         debounce=5, step=5):
            wanted = await asyncio.to_thread(self._read_workloads)
            if wanted is not None:
                self._apply_workloads(wanted)

    # -- HTTP API backend ---------------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self._ready

    def _resources(self, docs: list[dict[str, Any]]) -> tuple[list[Resource], list[str]]:
        out, errors = [], []
        for d in docs:
            src = Source(str(d.get("file", "")), int(d.get("line", 0) or 0))
            try:
                out.append(resource_from_dict(d.get("doc"), src))
            except ParseError as e:
                errors.append(str(e))
        return out, errors

    async def apply_documents(self, docs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        resources, errors = self._resources(docs)
        if errors:
            return [], errors
        try:
            result = self.memory.apply(resources)
        except ValidationError as e:
            return [], [str(i) for i in e.issues]
        except SailmeshError as e:
            return [], [str(e)]
        out = [f"{k} created" for k in result.created] + [f"{k} configured" for k in result.updated]
        out += [f"{k} unchanged" for k in result.unchanged]
        return out, []

    async def delete_documents(self, docs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        resources, errors = self._resources(docs)
        if errors:
            return [], errors
        keys = [r.key for r in resources]
        gone = set(self.memory.delete(keys))
        out = []
        for k in keys:
            if k in gone:
                out.append(f"{k} deleted")
            elif any(fs.get(k.kind, k.namespace, k.name) for fs in self.files):
                out.append(f"{k} is defined in a watched directory; remove it there")
            else:
                out.append(f"{k} not found")
        return out, []

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        items = []
        for r in self.store.list(kind or None):
            if (namespace and r.namespace != namespace) or (name and r.name != name):
                continue
            doc = dict(r.raw) or {"apiVersion": r.api_version, "kind": r.kind, "spec": dict(r.spec)}
            meta = dict(doc.get("metadata") or {})
            meta.setdefault("name", r.name)
            if r.namespace:
                meta.setdefault("namespace", r.namespace)
            doc["metadata"] = meta
            items.append(doc)
        return items

    def rejected(self) -> list[str]:
        return [str(r) for r in self.store.rejected()]

    def sync_status(self) -> list[dict[str, Any]]:
        if self.server is None:
            return []
        out = []
        for c in self.server.connections():
            parts = c.node_id.split("~")
            out.append({
                "proxy": c.node_id,
                "name": parts[2] if len(parts) == 4 else c.node_id,
                "type": parts[0] if len(parts) == 4 else "",
                "controlplane": f"sailmesh@{self.opts.host}:{self.opts.xds_port}",
                "version": self.snapshot.version if self.snapshot else 0,
                "delta": c.delta,
                "connectedAt": c.connected_at,
                "types": {t.short.upper(): {"sent": t.sent_version, "acked": t.acked_version, "nack": t.nack_detail,
                                            "resources": t.resource_count, "error": t.error}
                          for t in c.types.values()},
            })
        return sorted(out, key=lambda p: p["proxy"])

    def metrics_text(self) -> str:
        return self.metrics.render()

    def _counted_validation(self, resource: Resource) -> list[object]:
        """The validator, counting rejections as Istio's webhook counts them (galley_validation_failed)."""
        issues = self._validate(resource)
        if issues:
            group, _, version = resource.api_version.rpartition("/")
            kind = resource.kind.lower()  # the plural resource name, as the webhook sees it
            plural = kind[:-1] + "ies" if kind.endswith("y") and kind[-2:-1] not in "aeiou" else kind + "s"
            self._validation_failed.inc(group=group, version=version, resource=plural, reason="invalid_resource")
        return issues

    def config_dump(self, proxy_id: str, type_name: str) -> dict[str, Any] | None:
        if self.source is None or self.snapshot is None:
            return None
        view: ProxyView | None = next((v for v in self.source.proxies.values()
                                       if v.id == proxy_id or proxy_id in v.id.split("~")[2:3]), None)
        if view is None:
            return None

        types = {"clusters": CLUSTER, "listeners": LISTENER, "routes": ROUTE, "endpoints": ENDPOINT}
        wanted = [types[t] for t in type_name.split(",") if t in types] or list(types.values())
        dump: dict[str, Any] = {"proxy": view.id, "version": self.snapshot.version}
        for name, url in types.items():
            if url in wanted:
                try:
                    res = self.source.generator.resources(self.snapshot, view, url)
                except GenerationError as e:
                    dump[name] = {"error": str(e)}
                    continue
                dump[name] = {k: json_format.MessageToDict(v) for k, v in sorted(res.items())}
        return dump


