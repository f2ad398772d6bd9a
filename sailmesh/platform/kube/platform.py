"""KubePlatform: one API server connection, the informers, and the store + registry they feed.

Which resources are watched:
- every kind of every CustomResourceDefinition whose group ends in `istio.io` (its served v1, else its storage
  version), and the Gateway API's GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute and
  ReferenceGrant when their CRDs are installed, found by a CRD informer: a CRD installed later starts being
  watched then, a deleted one stops its watch (its objects leave the store);
- core Services, Secrets (not service-account tokens; gateways' `credentialName`), and ConfigMaps (the mesh
  config `istio` in the root namespace; the CAs a BackendTLSPolicy or a listener's frontendValidation names and a
  Gateway's infrastructure.parametersRef, as Istio's gateway controller watches ConfigMaps) -> KubeStore, except
  the two every namespace holds (`kube-root-ca.crt`, `istio-ca-root-cert`: never read, rewritten on rotation);
- Pods, EndpointSlices, Nodes (locality) and Namespaces -> KubeRegistry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from sailmesh.api.kinds import GATEWAY_API, KINDS
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.ca.rotation import RootRotation
from sailmesh.errors import PlatformError
from sailmesh.platform.kube.carotation import FollowTimings, RootFollower
from sailmesh.platform.kube.casecret import SharedCa, shared_ca
from sailmesh.platform.kube.client import KubeConnection, connect
from sailmesh.platform.kube.gatewaydeploy import GatewayDeployer
from sailmesh.platform.kube.gatewaystatus import GatewayStatusWriter, StatusOf
from sailmesh.platform.kube.informer import Informer, KubeResource, Obj
from sailmesh.platform.kube.istiostatus import IstioStatusWriter, StatusParts
from sailmesh.platform.kube.lease import LeaderElector, LeaseTimings
from sailmesh.platform.kube.registry import KubeRegistry
from sailmesh.platform.kube.store import KubeStore
from sailmesh.platform.kube.tokenreview import TokenReviewer
from sailmesh.settings import GatewayApiSwitches
from sailmesh.store.base import Validator, no_validation
from sailmesh.webhook.inject import InjectionConfig

log = logging.getLogger(__name__)

CRDS = KubeResource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
SERVICES = KubeResource("", "v1", "services", "Service")
SECRETS = KubeResource("", "v1", "secrets", "Secret")
CONFIGMAPS = KubeResource("", "v1", "configmaps", "ConfigMap")
PODS = KubeResource("", "v1", "pods", "Pod")
ENDPOINT_SLICES = KubeResource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
NODES = KubeResource("", "v1", "nodes", "Node", False)
NAMESPACES = KubeResource("", "v1", "namespaces", "Namespace", False)
# the ConfigMaps published into every namespace (kube-controller-manager's, the CA root's): not read by the mesh
UNREAD_CONFIGMAPS = ("kube-root-ca.crt", "istio-ca-root-cert")
# the Gateway API kinds the mesh converts (generate/gatewayapi/), as written in their CRDs
GATEWAY_API_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "ReferenceGrant",
                     "BackendTLSPolicy")


def istio_kinds(crd: Mapping[str, Any], gateway_api: bool = True) -> KubeResource | None:
    """The resource a CRD defines when the mesh reads it, or None: an Istio CRD (group *.istio.io) at its served
    v1, else its storage version; a Gateway API CRD (gateway.networking.k8s.io) of a kind the mesh converts, at
    the first of the versions sailmesh reads (api/kinds.py) that the CRD serves, unless `gateway_api` is off
    (Istio's PILOT_ENABLE_GATEWAY_API=false: those kinds are not watched at all)."""
    spec = crd.get("spec") or {}
    group = str(spec.get("group") or "")
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or () if isinstance(v, Mapping) and v.get("served")]
    if not names.get("plural") or not names.get("kind") or not versions:
        return None
    chosen: Mapping[str, Any] | None
    if group == GATEWAY_API:
        if not gateway_api:
            return None
        info = next((k for k in KINDS if k.group == GATEWAY_API and k.kind == names["kind"]), None)
        if info is None or info.kind not in GATEWAY_API_KINDS:
            return None
        served = {str(v.get("name")) for v in versions}
        chosen = next(({"name": v} for v in info.versions if v in served), None)
    elif group.endswith("istio.io"):
        # the served v1 when there is one (what Istio's own clients read), else the storage version
        chosen = next((v for v in versions if v.get("name") == "v1"),
                      next((v for v in versions if v.get("storage")), versions[0]))
    else:
        return None
    if chosen is None:
        return None
    return KubeResource(group, str(chosen["name"]), str(names["plural"]), str(names["kind"]),
                        spec.get("scope") != "Cluster")


class _CrdWatcher:
    """Keeps an informer for each Istio (and Gateway API) CRD: started when the CRD appears, moved when an update
    changes the version the mesh reads, stopped when the CRD goes (its objects leave the store), as istiod's
    informers follow CRDs."""

    def __init__(self, platform: KubePlatform) -> None:
        self.platform = platform

    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        present = set()
        for o in objs:
            found = istio_kinds(o, self.platform.gateway_api.enabled)
            if found is not None:
                present.add((found.group, found.plural))
                self.platform.watch_config(found)
        for watched in self.platform.config_kinds():  # CRDs deleted while nobody watched (a re-list after 410)
            if (watched.group, watched.plural) not in present:
                self.platform.unwatch_config(watched)

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        found = istio_kinds(obj, self.platform.gateway_api.enabled)
        for watched in self.platform.config_kinds():  # the same CRD at another version: watch the new one
            if found is not None and (watched.group, watched.plural) == (found.group, found.plural) \
                    and watched != found:
                self.platform.unwatch_config(watched, keep_objects=True)
        if found is not None:
            self.platform.watch_config(found)

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        group, plural = str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or "")
        for watched in self.platform.config_kinds():
            if (watched.group, watched.plural) == (group, plural):
                self.platform.unwatch_config(watched)


class KubePlatform:
    """Config and workloads from one API server. start() lists everything once; stop() ends every watch."""

    def __init__(self, kubeconfig: str, validator: Validator = no_validation, root_namespace: str = "istio-system",
                 context: str | None = None, watch_timeout_s: int = 300,
                 gateway_api: GatewayApiSwitches | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.gateway_api = gateway_api or GatewayApiSwitches()  # Istio's PILOT_ENABLE_GATEWAY_API* switches
        self.context = context
        self.root_namespace = root_namespace
        self.watch_timeout_s = watch_timeout_s
        self.store = KubeStore(validator)
        self.registry = KubeRegistry()
        self.conn: KubeConnection | None = None
        self.informers: dict[KubeResource, Informer] = {}
        self._config_kinds: set[KubeResource] = set()  # the informers a CRD started (_CrdWatcher)
        self._tasks: dict[KubeResource, asyncio.Task[None]] = {}
        self.elector: LeaderElector | None = None
        self._election: asyncio.Task[None] | None = None
        self._ca_temp: tempfile.TemporaryDirectory[str] | None = None
        self.gateway_status: GatewayStatusWriter | None = None
        self.gateway_deployer: GatewayDeployer | None = None
        self.ca_timings = FollowTimings()  # root rotation through istio-ca-secret (before follow_ca_root)
        self.ca_follower: RootFollower | None = None

    def _informer(self, resource: KubeResource, handler: Any, namespace: str = "", field_selector: str = ""
                  ) -> Informer:
        assert self.conn is not None
        inf = Informer(self.conn, resource, handler, namespace=namespace, field_selector=field_selector,
                       watch_timeout_s=self.watch_timeout_s)
        self.informers[resource] = inf
        return inf

    def watch_config(self, resource: KubeResource) -> None:
        """Feed the store with one more kind (an Istio CRD); a kind already watched is left alone."""
        if resource in self.informers or self.conn is None:
            return
        inf = self._informer(resource, self.store)
        self._config_kinds.add(resource)
        self._tasks[resource] = asyncio.create_task(inf.run(), name=f"kube-watch-{resource.plural}")
        log.info("watching %s.%s", resource.plural, resource.group)

    def unwatch_config(self, resource: KubeResource, keep_objects: bool = False) -> None:
        """Stop watching a kind whose CRD went (its objects leave the store) or moved to another version
        (`keep_objects`: the new version's informer re-lists them)."""
        if resource not in self._config_kinds:
            return
        self._config_kinds.discard(resource)
        self.informers.pop(resource, None)
        task = self._tasks.pop(resource, None)
        if task is not None:
            task.cancel()
        if not keep_objects:
            self.store.listed(resource, [])
        log.info("stopped watching %s.%s/%s (its CRD %s)", resource.plural, resource.group, resource.version,
                 "changed version" if keep_objects else "was deleted")

    def config_kinds(self) -> list[KubeResource]:
        """The kinds watched because a CRD defines them."""
        return sorted(self._config_kinds, key=lambda r: (r.group, r.plural, r.version))

    async def start(self, timeout_s: float | None = None, log_every_s: float = 10.0) -> None:
        """Connect, start every informer, and wait until each has listed once.

        As istiod does, this waits for the API server however long it takes (the informers retry with back-off)
        and says every `log_every_s` what it still waits for; `timeout_s` bounds the wait (PlatformError then).
        """
        self.conn = connect(self.kubeconfig, self.context)
        self._informer(SERVICES, self.store)
        self._informer(SECRETS, self.store, field_selector="type!=kubernetes.io/service-account-token")
        self._informer(CONFIGMAPS, self.store,
                       field_selector=",".join(f"metadata.name!={name}" for name in UNREAD_CONFIGMAPS))
        for r in (PODS, ENDPOINT_SLICES, NODES, NAMESPACES):
            self._informer(r, self.registry)
        self._informer(CRDS, _CrdWatcher(self))
        for res, inf in list(self.informers.items()):
            self._tasks[res] = asyncio.create_task(inf.run(), name=f"kube-watch-{res.plural}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        synced = asyncio.ensure_future(self.wait_synced())
        try:
            while not synced.done():
                left = log_every_s if deadline is None else min(log_every_s, deadline - loop.time())
                await asyncio.wait([synced], timeout=max(0.0, left))
                if synced.done():
                    break
                if deadline is not None and loop.time() >= deadline:
                    raise PlatformError(f"Kubernetes API {self.kubeconfig}: not listed within {timeout_s:.0f}s: "
                                        + ", ".join(self.unsynced()))
                log.warning("waiting for the Kubernetes API server %s (not ready until synced): not listed yet: %s",
                            self.conn.server, ", ".join(self.unsynced()))
        except BaseException:
            synced.cancel()
            await self.stop()
            raise
        log.info("Kubernetes: %d resources, %d workloads from %s", len(self.store.keys()),
                 len(self.registry.workloads()), self.conn.server)

    def unsynced(self) -> list[str]:
        """The resources not listed yet, each with its informer's last error."""
        return [f"{r.plural} ({i.stats.last_error or 'no answer yet'})"
                for r, i in self.informers.items() if not i.synced.is_set()]

    def elect(self, lease_duration_s: float = 15.0) -> LeaderElector:
        """Join the leader election on the Lease in the root namespace (after start()); leader tasks run while this
        replica holds it."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        elector = LeaderElector(self.conn, self.root_namespace, timings=LeaseTimings.scaled(lease_duration_s))
        self.elector = elector
        self._election = asyncio.create_task(elector.run(), name="kube-leader-election")
        return elector

    async def shared_ca(self, trust_domain: str, state_dir: str) -> SharedCa | None:
        """The CA every replica uses (after start()): the `cacerts` Secret, else istio-ca-secret (created when
        absent), in the cacerts file layout under the state dir (a temporary folder without one); None without a
        root namespace."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        if state_dir:
            folder, local = pathlib.Path(state_dir) / "kube-ca", pathlib.Path(state_dir)
        else:
            self._ca_temp = self._ca_temp or tempfile.TemporaryDirectory(prefix="sailmesh-kube-ca-")
            folder, local = pathlib.Path(self._ca_temp.name) / "ca", None
        return await shared_ca(self.conn, self.root_namespace, trust_domain, folder, local)

    def follow_ca_root(self, rotation: RootRotation, changed: Callable[[], None]) -> RootFollower:
        """Follow the root in istio-ca-secret (after start() and shared_ca()): when it changes, this replica's CA
        trusts the new root, signs with it once the bundle is out, then drops the old one (carotation.py)."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        follower = RootFollower(self.conn, self.root_namespace, rotation, changed, self.ca_timings)
        self.ca_follower = follower
        key = KubeResource("", "", "ca-root-follower", "ca-root-follower")
        self._tasks[key] = asyncio.create_task(follower.run(), name="kube-ca-root-follower")
        return follower

    def run_gateway_controllers(self, status_of: StatusOf, domain_suffix: str, injection: InjectionConfig) -> None:
        """The Gateway API's writers (after start() and elect()): status of every Gateway API object, a gateway per
        Gateway and the default GatewayClass; run by the Lease holder (or at once without an election). Each as
        Istio's switch says (self.gateway_api): none without the Gateway API, status with
        PILOT_ENABLE_GATEWAY_API_STATUS, gateways with ..._DEPLOYMENT_CONTROLLER, the class with
        ..._GATEWAYCLASS_CONTROLLER."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        switches = self.gateway_api
        if not switches.enabled:
            return
        writers = []
        if switches.status:
            self.gateway_status = GatewayStatusWriter(self.conn, self.store, status_of, domain_suffix)
            writers.append(("gateway-status", self.gateway_status.lead))
        if switches.deployment_controller or switches.gatewayclass_controller:
            self.gateway_deployer = GatewayDeployer(self.conn, self.store, self.root_namespace, injection,
                                                    lambda: any(r.group == GATEWAY_API and r.kind == "GatewayClass"
                                                                for r in self.informers),
                                                    deploy=switches.deployment_controller,
                                                    default_class=switches.gatewayclass_controller)
            writers.append(("gateway-deployer", self.gateway_deployer.lead))
        for name, lead in writers:
            if self.elector is not None:
                self.elector.add_task(name, lead)
            else:
                self._tasks[KubeResource("", "", name, name)] = asyncio.create_task(lead(), name=name)

    def run_istio_status(self, parts_of: Callable[[], Awaitable[Mapping[ResourceKey, StatusParts]]]
                         ) -> IstioStatusWriter:
        """The status writer of the Istio kinds (after start() and elect()), run by the Lease holder (or at once
        without an election); the caller decides what it writes (istiostatus.py)."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        writer = IstioStatusWriter(self.conn, self.istio_objects, parts_of)
        if self.elector is not None:
            self.elector.add_task("istio-status", writer.lead)
        else:
            self._tasks[KubeResource("", "", "istio-status", "istio-status")] = asyncio.create_task(
                writer.lead(), name="istio-status")
        return writer

    def background(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` on every replica (not only the leader) until stop()."""
        self._tasks[KubeResource("", "", name, name)] = asyncio.create_task(work(), name=name)

    def istio_objects(self) -> list[tuple[Resource, KubeResource]]:
        """Every object of an Istio kind (a CRD group ending in istio.io) in the store, with where it lives."""
        return [(r, kind) for kind in self.config_kinds() if kind.group.endswith("istio.io")
                for r in self.store.list(kind.kind)]

    def token_reviewer(self) -> TokenReviewer:
        """A TokenReview verifier on this platform's connection (after start())."""
        if self.conn is None:
            raise PlatformError("the Kubernetes platform is not started")
        return TokenReviewer(self.conn)

    async def wait_synced(self) -> None:
        """Until every informer (including ones CRDs added meanwhile) has listed once."""
        while True:
            pending = [i for i in self.informers.values() if not i.synced.is_set()]
            if not pending:
                return
            await asyncio.gather(*(i.synced.wait() for i in pending))

    async def stop(self) -> None:
        if self._election is not None:  # first: a leader releases its Lease while the connection is up
            self._election.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._election
            self._election = None
        for t in self._tasks.values():
            t.cancel()
        for t in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        if self._ca_temp is not None:
            self._ca_temp.cleanup()
            self._ca_temp = None
