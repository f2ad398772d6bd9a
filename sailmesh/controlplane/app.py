"""The control-plane process: stores + registry -> debounce -> snapshot -> generators -> ADS push."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf import json_format

from sailmesh.api import meshconfig
from sailmesh.api.change import Change
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey, Source
from sailmesh.api.validate import errors_only, validate
from sailmesh.ca.authority import CaOptions
from sailmesh.ca.limits import Limit
from sailmesh.ca.rotation import fingerprint
from sailmesh.controlplane import analyze_api, dryrun, explain_api, istiostatus
from sailmesh.controlplane import live as live_mod
from sailmesh.controlplane.debounce import Debouncer
from sailmesh.controlplane.distribution import DistributionTracker
from sailmesh.controlplane.dns import DnsServer
from sailmesh.controlplane.http_api import Outcome, make_app
from sailmesh.controlplane.identity import MeshIdentity
from sailmesh.controlplane.nds import NameTableService
from sailmesh.controlplane.options import ControlPlaneOptions as ControlPlaneOptions
from sailmesh.controlplane.source import MeshSource
from sailmesh.controlplane.trim import IdleTrim, malloc_trim
from sailmesh.controlplane.workloads import WorkloadFileFollower
from sailmesh.errors import CertificateError, GenerationError, ParseError, SailmeshError, ValidationError
from sailmesh.generate import authn, enforcement
from sailmesh.generate.affect import push_request
from sailmesh.generate.gatewayapi.reader import GatewayApiReader
from sailmesh.metrics import CitadelMetrics, Registry
from sailmesh.registry.aggregate import AggregateRegistry
from sailmesh.registry.jwks import JwksFetcher, wanted_uris
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

if TYPE_CHECKING:  # imported where used: the Kubernetes platform (which the webhooks use) costs ~0.27 CPU s to
    # import, and the embedded mesh (every e2e test's control plane) has neither
    from sailmesh.controlplane.webhooks import Webhooks
    from sailmesh.platform.kube import KubePlatform

log = logging.getLogger("sailmesh.controlplane")


def _doc_key(doc: dict[str, Any]) -> ResourceKey:
    meta = doc.get("metadata") or {}
    return ResourceKey(str(doc.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def rejecting_issues(resource: Resource) -> list[object]:
    """Istio's validation, errors only: warnings (deprecated fields, ...) never keep config out."""
    return list(errors_only(validate(resource)))


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
        self.kube: KubePlatform | None = None
        if opts.kubeconfig:
            from sailmesh.platform.kube import KubePlatform

            self.kube = KubePlatform(opts.kubeconfig, self.validator, settings.mesh.root_namespace,
                                     context=opts.kube_context, gateway_api=settings.gateway_api)
        kube_layer = [self.kube.store] if self.kube else []
        self.store = LayeredStore([*self.files, *kube_layer, self.memory])
        # what snapshots are built from: the store plus the Gateway API objects converted to Istio's kinds
        self.config = GatewayApiReader(self.store, settings.mesh.domain_suffix, settings.gateway_api.enabled)
        # local workloads, plus Kubernetes' Pods and EndpointSlices when there is an API server
        self.registry = AggregateRegistry(LocalRegistry(), *([self.kube.registry] if self.kube else []))
        self.workload_file = (WorkloadFileFollower(opts.workload_file, self.registry.local)
                              if opts.workload_file else None)
        self.jwks = JwksFetcher()  # RequestAuthentication jwksUri key sets, fetched here and inlined (as istiod)
        self.snapshot: MeshSnapshot | None = None
        self.source: MeshSource | None = None
        self.dns: DnsServer | None = None
        self.names = NameTableService(lambda: self.snapshot)  # agents' DNS proxies (controlplane/nds.py)
        self.server: AdsServer | None = None
        self.trim: IdleTrim | None = None  # the allocator's free pages back to the system after pushes (trim.py)
        self.identity: MeshIdentity | None = None
        self.webhooks: Webhooks | None = None
        self.distribution: DistributionTracker | None = None  # which proxies hold each Istio object (Reconciled)
        self.debouncer: Debouncer[Change] = Debouncer(self._push, Change.merge, settings.debounce)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._ready = False
        self.started_at = time.time()
        self.pushes = 0
        self._logged_rejections: set[str] = set()
        self.mesh_file = meshconfig.load_file(opts.mesh_config_file) if opts.mesh_config_file else {}
        self._not_enforced: dict[ResourceKey, list[str]] = {}  # what is said about each resource
        self._analysis_cache: tuple[str, list[dict[str, str]]] | None = None  # (live mesh digest, messages)
        self._analyze_answers: analyze_api.LastAnswer[tuple[int, dict[str, Any]]] = analyze_api.LastAnswer()
        # (proxy id, xDS types) -> (the proxy's view, config version, its config dump JSON)
        self._dump_cache: dict[tuple[str, tuple[str, ...]], tuple[ProxyView, int, dict[str, Any]]] = {}
        self._logged_mesh_config: meshconfig.MeshConfig | None = None
        self._mounts: dict[str, Callable[[ControlPlane], web.Application]] = {}

    def mount(self, prefix: str, factory: Callable[[ControlPlane], web.Application]) -> None:
        """Serve factory(self) under prefix on the HTTP port (the dashboard, a higher layer); before start()."""
        self._mounts[prefix] = factory

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        for fs in self.files:
            await fs.start()
        if self.kube is not None:
            await self.kube.start()
        # Kubernetes changes arrive while start() goes on: watch them from before the first build
        early = [self.registry.watch(), self.kube.store.watch()] if self.kube is not None else []
        if self.workload_file is not None:
            self.workload_file.load()
        self.snapshot = build(None, self.config, self.registry, Change.everything(), self.settings.mesh,
                              self.mesh_file, jwks=self.jwks.keys())
        self._follow_config(self.snapshot, Change.everything())
        self.source = MeshSource(self.snapshot)
        self.server = AdsServer(self.source, self.xds_metrics, write_timeout=self.settings.xds_send_timeout_s,
                                push_throttle=self.settings.push_throttle,
                                streams_per_s=self.settings.xds_streams_per_s)
        cacerts = self.opts.cacerts_dir
        shared = None
        if self.kube is not None and not cacerts:  # replicas share one CA: istio-ca-secret (or cacerts), as istiod
            shared = await self.kube.shared_ca(self.snapshot.mesh.trust_domain, self.opts.state_dir)
            cacerts = str(shared.folder) if shared is not None else ""
        self.identity = MeshIdentity(self.opts.state_dir, cacerts,
                                     CaOptions(trust_domain=self.snapshot.mesh.trust_domain,
                                               min_ttl_s=self.opts.min_cert_ttl_s),
                                     ips=["127.0.0.1", self.opts.host], metrics=self.citadel_metrics,
                                     csr_limit=Limit(self.opts.csr_rate, self.opts.csr_rate * 5))
        self.server.authorize = self.identity.authorize_proxy
        self.names.authorize = self.identity.authorize_proxy  # the node bound to its certificate, as for ADS
        if self.kube is not None:  # agents in pods prove themselves with service-account tokens (TokenReview)
            from sailmesh.platform.kube.casecret import CA_SECRET

            self.identity.accept_platform_tokens(self.kube.token_reviewer())
            if shared is not None and shared.secret == CA_SECRET:  # a root rotated in the Secret: every replica
                self.kube.follow_ca_root(self.identity.rotation, self.identity.bundle_changed)
            if self.opts.leader_lease_s > 0:  # replicas: the Lease holder does the writes
                self.kube.elect(self.opts.leader_lease_s)
            # Gateway API status, a gateway per Gateway (as Istio's gateway controllers): the Lease holder's
            self.kube.run_gateway_controllers(self.config.status, self.settings.mesh.domain_suffix, self.opts.injection)
            self.distribution = istiostatus.start(self)  # Istio kinds' status (PILOT_ENABLE_STATUS, ..._ANALYSIS)
        plaintext = [("127.0.0.1", self.opts.xds_port, None)] if self.opts.xds_plaintext else []
        self.opts.xds_tls_port = await self.server.serve(
            self.opts.host, self.opts.xds_tls_port, self.identity.credentials(),
            handlers=[self.identity.grpc_handler(), self.names.handler()], also=plaintext)
        self.opts.xds_port = self.server.also_ports[0] if plaintext else 0
        self.opts.ca_port = await self.identity.serve_bootstrap(self.opts.host, self.opts.ca_port)
        if self.opts.webhook_port is not None:
            from sailmesh.controlplane.webhooks import Webhooks

            elector = self.kube.elector if self.kube is not None else None
            self.webhooks = await Webhooks.start(
                self.identity.authority, self.validator, self.opts.injection, self.opts.host, self.opts.webhook_port,
                self.kube.conn if self.kube is not None else None, self.opts.webhook_sans,
                start_writer=elector is None)
            self.opts.webhook_port = self.webhooks.server.port
            self._inject_with_mesh(self.snapshot)
            if elector is not None and self.webhooks.writer is not None:  # replicas: only the leader writes
                self.webhooks.writer.manager = elector.identity
                elector.add_task("webhook-writer", self.webhooks.writer.lead)
        if self.opts.dns_port is not None:
            self.dns = DnsServer(lambda: self.snapshot)
            await self.dns.start(self.opts.host, self.opts.dns_port)
            self.opts.dns_port = self.dns.port
        for sub in [*(fs.watch() for fs in self.files), self.memory.watch(), *(early or [self.registry.watch()]),
                    self.jwks.watch()]:
            self._tasks.append(asyncio.create_task(self._pump(sub)))
        if self.workload_file is not None:
            self._tasks.append(asyncio.create_task(self.workload_file.follow()))
        self.debouncer.start()
        server = self.server
        self.trim = IdleTrim(lambda: server.budget.granted, malloc_trim(), quiet=server.hashes.quiet)
        self.trim.start()
        mounts = {prefix: factory(self) for prefix, factory in self._mounts.items()}
        self._runner = web.AppRunner(make_app(self, mounts), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.opts.host, self.opts.http_port)
        await site.start()
        self.opts.http_port = self._runner.addresses[0][1]  # as bound (0: any free port)
        if self.opts.api_mtls_address:
            self.opts.api_mtls_address = await self._serve_api_mtls(self.opts.api_mtls_address)
        self._ready = True
        log.info("control plane ready: xDS (mTLS) %s:%d, CA %s:%d, plaintext xDS %s, HTTP %s:%d, %d resources, "
                 "%d services, %d workloads", self.opts.host, self.opts.xds_tls_port, self.opts.host,
                 self.opts.ca_port, f"127.0.0.1:{self.opts.xds_port}" if self.opts.xds_port else "off",
                 self.opts.host, self.opts.http_port,
                 sum(len(v) for v in self.snapshot.config.values()), len(self.snapshot.services),
                 len(self.snapshot.workloads))
        self._log_rejections()

    async def _serve_api_mtls(self, address: str) -> str:
        """The same API over TLS with client certificates, for remote callers; returns host:port as bound."""
        assert self._runner is not None and self.identity is not None
        host, _, port = address.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
        bound = sock.getsockname()
        await web.SockSite(self._runner, sock, ssl_context=self.identity.api_ssl_context()).start()
        log.info("HTTP API for remote callers (mTLS, admin certificate) on %s:%d", bound[0], bound[1])
        return f"{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        self._ready = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.debouncer.close()
        if self.trim is not None:
            await self.trim.close()
        await self.jwks.close()
        if self.dns is not None:
            await self.dns.close()
        if self.server is not None:
            await self.server.stop(0)
        for fs in self.files:
            await fs.close()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.kube is not None:
            await self.kube.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.identity is not None:
            await self.identity.stop()

    # -- change flow ------------------------------------------------------------------------------
    async def _pump(self, changes: AsyncIterator[Change]) -> None:
        async for change in changes:
            self.debouncer.submit(change)

    async def _push(self, change: Change) -> None:
        assert self.snapshot is not None and self.source is not None and self.server is not None
        prev = self.snapshot
        change = self.config.expand(change)
        cur = build(prev, self.config, self.registry, change, self.settings.mesh, jwks=self.jwks.keys())
        request = push_request(change, prev, cur)
        self.snapshot = cur
        self.names.publish()
        self.source.update(cur, request)
        self._follow_config(cur, change)
        if self.distribution is not None:
            self.distribution.built(cur.version, request is not None,
                                    self.kube.store.keys() if change.full and self.kube else change.keys)
        if request is not None:
            self.pushes += 1
            self.server.push(request)
            log.info("push v%d (%s): %s", cur.version, request.reason,
                     ",".join(sorted(short_name(t) for t in request.type_urls or ())) or "all")
        self._log_rejections()

    def _follow_config(self, snapshot: MeshSnapshot, change: Change) -> None:
        """Fetch the key sets the config's jwksUris name; log what is accepted but not enforced, once each."""
        self.jwks.want(wanted_uris(snapshot.of_kind(authn.KIND)))
        if change.full:
            resources = {r.key: r for rs in snapshot.config.values() for r in rs}
            keys = set(resources) | set(self._not_enforced)
        else:
            keys = set(change.keys)
            resources = {k: r for k in keys if (r := self.store.get(k.kind, k.namespace, k.name)) is not None}
        for key in keys:  # only what changed is looked at again (a push must stay cheap)
            r = resources.get(key)
            lines = enforcement.not_enforced(r, snapshot.mesh_config) if r is not None else []
            old = self._not_enforced.pop(key, [])
            if lines:
                self._not_enforced[key] = lines
            for text in lines:
                if text not in old:
                    log.warning("%s", text)
        if snapshot.mesh_config.unmodelled and snapshot.mesh_config is not self._logged_mesh_config:
            # mesh config keys sailmesh does not read: said once per mesh config, never dropped silently
            log.warning("mesh config: accepted, not enforced: %s", ", ".join(snapshot.mesh_config.unmodelled))
        self._logged_mesh_config = snapshot.mesh_config
        self._inject_with_mesh(snapshot)

    def _inject_with_mesh(self, snapshot: MeshSnapshot) -> None:
        """The injector follows the mesh config's defaultConfig.proxyMetadata (e.g. ISTIO_META_DNS_CAPTURE) and
        `concurrency` under the ProxyConfig resources' (Istio's EffectiveProxyConfig at injection)."""
        if self.webhooks is not None:
            default = snapshot.mesh_config.default_config
            self.webhooks.server.inject = replace(
                self.opts.injection, proxy_metadata=tuple(sorted((default.proxy_metadata or {}).items())),
                proxy_configs=snapshot.of_kind("ProxyConfig"), root_namespace=snapshot.mesh_config.root_namespace,
                mesh_concurrency=default.concurrency)

    def _log_rejections(self) -> None:
        """Log each rejection once, when it first appears (a file fixed and broken again logs again)."""
        current = {str(r) for r in self.store.rejected()}
        for text in sorted(current - self._logged_rejections):
            log.warning("rejected: %s", text)
        self._logged_rejections = current

    # -- HTTP API backend ---------------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self._ready

    def is_admin(self, token: str) -> bool:
        return self.identity is not None and self.identity.is_admin(token)

    def issue_join_token(self, namespace: str, service_account: str, ttl_s: float = 0.0) -> str:
        assert self.identity is not None
        return self.identity.tokens.issue(namespace, service_account, ttl_s)

    def certificate_caller(self, der: bytes | None) -> tuple[int, str]:
        return self.identity.certificate_caller(der) if self.identity is not None else (401, "starting")

    def issue_admin_certificate(self, csr_pem: str, ttl_s: float = 0) -> list[str]:
        assert self.identity is not None
        return self.identity.issue_admin_certificate(csr_pem, ttl_s)

    def revoke_join_tokens(self, namespace: str, service_account: str) -> int:
        assert self.identity is not None
        return self.identity.tokens.revoke(namespace, service_account)

    async def rotate_root(self, phase: str, force: bool = False) -> dict[str, Any]:
        assert self.identity is not None
        follower = self.kube.ca_follower if self.kube is not None else None
        if phase == "status" or follower is None:
            return self.identity.rotate_root(phase, force)
        # replicas share istio-ca-secret: a rotation starts by writing a new root there, and every replica (this one
        # too) then takes trust, sign and drop itself (platform/kube/carotation.py); one replica stepping its own
        # root would leave the others' behind
        if phase != "add":
            raise CertificateError(
                f"on replicas sharing istio-ca-secret each replica takes the {phase!r} step itself once its "
                "workloads followed the last one (`sailmesh x ca status` shows the steps)")
        root = await follower.start_rotation(self.identity.authority.options.trust_domain)
        return {**self.identity.rotate_root("status"), "shared": True, "written": fingerprint(root)}

    def _resources(self, docs: list[dict[str, Any]]) -> tuple[list[Resource], list[str]]:
        out, errors = [], []
        for d in docs:
            src = Source(str(d.get("file", "")), int(d.get("line", 0) or 0))
            try:
                out.append(resource_from_dict(d.get("doc"), src))
            except ParseError as e:
                errors.append(str(e))
        return out, errors

    async def apply_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                              analyze: bool = False) -> Outcome:
        """Validate and apply (or, dry run, only say what would change); with `analyze`, the analyzers' warnings
        about what was applied (the CLI asks for them; scripts and benchmarks need not wait for them)."""
        resources, errors = self._resources(docs)
        if errors:
            return Outcome(errors=errors)
        try:
            result = self.memory.preview(resources) if dry_run else self.memory.apply(resources)
        except ValidationError as e:
            return Outcome(errors=[str(i) for i in e.issues])
        except SailmeshError as e:
            return Outcome(errors=[str(e)])
        notes = [line for r in resources for line in enforcement.not_enforced(r)]
        suffix = " (dry run)" if dry_run else ""
        out = [f"{k} created{suffix}" for k in result.created] + [f"{k} configured{suffix}" for k in result.updated]
        out += [f"{k} unchanged{suffix}" for k in result.unchanged]
        out = [line + self._shadow_note(k) for line, k in
               zip(out, [*result.created, *result.updated, *result.unchanged], strict=True)]
        if dry_run:  # what would change in each resource already in force (kubectl diff's answer)
            new = {r.key: r for r in resources}
            out = [line + dryrun.changes(self.store.get(k.kind, k.namespace, k.name), new[k])
                   for line, k in zip(out, [*result.created, *result.updated, *result.unchanged], strict=True)]
        if not analyze:
            return Outcome(results=out, warnings=notes)
        # Analyze the mesh as it now is (dry run: with the resources in it), off the event loop.
        live = self.live_documents()
        if dry_run:
            applied = {r.key for r in resources}
            live = [d for d in live if _doc_key(d) not in applied] + [live_mod.document(r) for r in resources]
        warnings = await asyncio.to_thread(live_mod.warnings_for, {r.key for r in resources}, live, self.mesh_file)
        return Outcome(results=out, warnings=notes + warnings)

    def _shadow_note(self, key: ResourceKey) -> str:
        """Where a watched directory also defines the resource, which copy is in force (the applied one)."""
        for fs in self.files:
            if fs.get(key.kind, key.namespace, key.name) is not None:
                return f" (overrides the watched directory's copy in {fs.root})"
        return ""

    async def analysis(self) -> list[dict[str, str]]:
        """For `x describe`: the analyzers' messages about the live mesh, computed off the event loop and once per
        distinct live mesh (config and workloads), however often it is asked."""
        live = self.live_documents()
        key = hashlib.sha256(json.dumps(live, sort_keys=True, default=str).encode()).hexdigest()
        cached = self._analysis_cache
        if cached is None or cached[0] != key:
            cached = (key, await asyncio.to_thread(live_mod.messages, live, self.mesh_file))
            self._analysis_cache = cached
        return cached[1]

    async def analyze_files(self, body: Any) -> tuple[int, dict[str, Any]]:
        """`sailmesh analyze`'s question (its files, suppressions, mesh config) about the live mesh (analyze_api)."""
        live = self.live_documents()
        return await self._analyze_answers.get([live, body, self.mesh_file],
                                               lambda: analyze_api.answer(body, live, self.mesh_file))

    async def explain(self, body: Any) -> tuple[int, dict[str, Any]]:
        """`sailmesh explain`, walked here (explain_api) in a worker thread; the config dumps it asks for are built
        on the event loop, as /debug/config_dump builds them."""
        loop = asyncio.get_running_loop()

        async def on_loop(node_id: str, types: str) -> dict[str, Any] | None:
            return self.config_dump(node_id, types)

        def dump(node_id: str, types: str) -> dict[str, Any] | None:
            return asyncio.run_coroutine_threadsafe(on_loop(node_id, types), loop).result(timeout=60)

        return await asyncio.to_thread(explain_api.explain, body, self.sync_status(), dump)

    async def authz_rules(self, node_id: str) -> tuple[int, dict[str, Any]]:
        """`x authz check`: the RBAC rules of the proxy's inbound listeners (read in a worker thread)."""
        listeners = self.config_dump(node_id, "listeners")
        return await asyncio.to_thread(explain_api.authz_rules, node_id, lambda _n, _t: listeners)

    def live_documents(self) -> list[dict[str, Any]]:
        """The config in force plus workloads as Pods and Namespaces, as `analyze` reads a live mesh."""
        proxied = {c.node_id.split("~")[1] for c in (self.server.connections() if self.server else ())
                   if c.node_id.count("~") == 3}
        workloads = self.snapshot.workloads if self.snapshot else ()
        namespaces = self.kube.registry.namespaces() if self.kube is not None else ()
        return live_mod.live_documents(self.store.list(), workloads, proxied, namespaces)

    async def delete_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                               analyze: bool = False) -> Outcome:
        resources, errors = self._resources(docs)
        if errors:
            return Outcome(errors=errors)
        keys = [r.key for r in resources]
        applied = {k for k in keys if self.memory.get(k.kind, k.namespace, k.name) is not None}
        gone = applied if dry_run else set(self.memory.delete(keys))
        out, missing = [], []
        for k in keys:
            in_file = next((fs.root for fs in self.files if fs.get(k.kind, k.namespace, k.name)), None)
            if k in gone:
                out.append(f"{k} deleted" + (" (dry run)" if dry_run else "")
                           + (f"; the copy in {in_file} is in force now" if in_file else ""))
            elif in_file:
                out.append(f"{k} is defined in the watched directory {in_file}; remove it there")
            else:
                existing = sorted(f"{r.namespace}/{r.name}" if r.namespace else r.name for r in self.store.list(k.kind))
                missing.append(f"{k} not found" + (f" (existing: {', '.join(existing)})" if existing
                                                  else f" (no {k.kind} exists)"))
        return Outcome(results=out, errors=missing, partial=bool(out))

    def proxy_defaults(self) -> dict[str, Any]:
        """What a proxy's settings come from as it starts (Istio's EffectiveProxyConfig), read from the snapshot the
        pushes are made from (as the injector's, _inject_with_mesh), so a proxy starts with the config its xDS
        reflects: the ProxyConfig resources, the mesh config's defaultConfig.concurrency and its root namespace."""
        assert self.snapshot is not None  # the HTTP API serves only once start() built the first snapshot
        mesh = self.snapshot.mesh_config
        return {"proxyConfigs": [live_mod.document(r) for r in self.snapshot.of_kind("ProxyConfig")],
                "meshConcurrency": mesh.default_config.concurrency, "rootNamespace": mesh.root_namespace}

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        return [self._with_status(live_mod.document(r), r) for r in self._matching(kind, namespace, name)]

    def _with_status(self, doc: dict[str, Any], r: Resource) -> dict[str, Any]:
        """A Gateway API object's document with the status Istio would write (addresses: running gateways)."""
        proxies = [(p.ip, p.namespace, p.labels) for p in (self.source.proxies.values() if self.source else ())
                   if p.type == "router"]
        status = self.config.status(r, proxies)
        return {**doc, "status": status} if status is not None else doc

    def _matching(self, kind: str, namespace: str, name: str) -> list[Resource]:
        return [r for r in self.store.list(kind or None)
                if not (namespace and r.namespace != namespace) and not (name and r.name != name)]

    def shadowed(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        """For `get`: the listed resources that are both applied and in a watched directory, and which copy is
        in force (the applied one, as apply's note says)."""
        out = {}
        for r in self._matching(kind, namespace, name):
            if self.memory.get(r.kind, r.namespace, r.name) is not None and (note := self._shadow_note(r.key)):
                out[str(r.key)] = "the applied copy is in force" + note
        return out

    def not_enforced_notes(self, kind: str, namespace: str, name: str) -> list[str]:
        """For `get`: what the listed resources hold that is accepted but not enforced (the lines `apply` and the
        log show), so the CLI need not import the generators to say it."""
        mesh = (self.snapshot.mesh_config,) if self.snapshot is not None else ()
        return [line for r in self._matching(kind, namespace, name) for line in enforcement.not_enforced(r, *mesh)]

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
                "controlplane": f"sailmesh@{self.opts.host}:{self.opts.xds_tls_port}",
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
        # the JSON of one proxy's config is built once per config version (explain and proxy-status ask often)
        key = (view.id, tuple(wanted))
        cached = self._dump_cache.get(key)
        if cached is not None and cached[0] is view and cached[1] == self.snapshot.version:
            return cached[2]
        dump: dict[str, Any] = {"proxy": view.id, "version": self.snapshot.version}
        for name, url in types.items():
            if url in wanted:
                try:
                    res = self.source.generator.resources(self.snapshot, view, url)
                except GenerationError as e:
                    dump[name] = {"error": str(e)}
                    continue
                dump[name] = {k: json_format.MessageToDict(v, preserving_proto_field_name=True)  # as Envoy's dump
                              for k, v in sorted(res.items())}
        if len(self._dump_cache) > 4 * len(self.source.proxies) + 16:  # proxies that left: start over
            self._dump_cache.clear()
        self._dump_cache[key] = (view, self.snapshot.version, dump)
        return dump


