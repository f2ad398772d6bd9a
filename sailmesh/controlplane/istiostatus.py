"""What the Lease holder writes in the status of the API server's Istio objects, by Istio's switches: the analyzers'
messages (PILOT_ENABLE_ANALYSIS) and the distribution progress of each object's generation (PILOT_ENABLE_STATUS
with PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING); platform/kube/istiostatus.py writes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from sailmesh.analysis.registry import analyze
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.controlplane import live as live_mod
from sailmesh.controlplane.distribution import DistributionTracker
from sailmesh.platform.kube.client import KubeApiError
from sailmesh.platform.kube.distreport import DistributionReports, report, resource_string
from sailmesh.platform.kube.informer import KubeResource
from sailmesh.platform.kube.istiostatus import StatusParts, validation_message
from sailmesh.platform.kube.lease import default_identity
from sailmesh.server.connection import ConnectionStatus
from sailmesh.settings import IstioStatusSwitches

if TYPE_CHECKING:
    from sailmesh.controlplane.app import ControlPlane

log = logging.getLogger(__name__)


def messages_by_object(docs: list[dict[str, Any]], mesh_config: Mapping[str, Any]
                       ) -> dict[ResourceKey, tuple[dict[str, Any], ...]]:
    """The analyzers' messages about the live mesh, as validationMessages entries, per object."""
    out: dict[ResourceKey, list[dict[str, Any]]] = {}
    for d in analyze(live_mod.resources(docs), mesh_config):
        if d.resource is not None:
            out.setdefault(d.resource.key, []).append(
                validation_message(d.code, d.level, d.type.documentation_url))
    return {k: tuple(v) for k, v in out.items()}


class IstioStatusParts:
    """Computes each Istio object's StatusParts; the analysis runs off the event loop, once per snapshot version
    and proxy count. With `reports` the Reconciled counts are every replica's reports added up (distreport.py),
    this replica's among them; without, this replica's proxies alone."""

    def __init__(self, switches: IstioStatusSwitches, tracker: DistributionTracker,
                 objects: Callable[[], Iterable[tuple[Resource, KubeResource]]],
                 connections: Callable[[], list[ConnectionStatus]],
                 live_documents: Callable[[], list[dict[str, Any]]], mesh_config: Callable[[], Mapping[str, Any]],
                 version: Callable[[], int], reports: DistributionReports | None = None) -> None:
        self.switches = switches
        self.tracker = tracker
        self.objects = objects
        self.connections = connections
        self.live_documents = live_documents
        self.mesh_config = mesh_config
        self.version = version
        self.reports = reports
        self._analysis: tuple[tuple[int, int], dict[ResourceKey, tuple[dict[str, Any], ...]]] | None = None

    async def _messages(self, conns: int) -> dict[ResourceKey, tuple[dict[str, Any], ...]]:
        key = (self.version(), conns)
        if self._analysis is None or self._analysis[0] != key:
            found = await asyncio.to_thread(messages_by_object, self.live_documents(), self.mesh_config())
            self._analysis = (key, found)
        return self._analysis[1]

    def report(self, reporter: str) -> dict[str, Any]:
        """This replica's distribution report: its proxies, and per tracked object those holding its generation."""
        conns = self.connections()
        counted: dict[int, int] = {}
        held = {}
        for r, where in self.objects():
            since = self.tracker.since(r.key)
            progress = self.tracker.progress(r.key, conns, counted)
            if since is not None and progress is not None:
                held[resource_string(where, r, since[0])] = progress[0]
        return report(reporter, len(conns), held)

    async def _progress(self, conns: list[ConnectionStatus]
                        ) -> Callable[[Resource, KubeResource], tuple[int, int] | None] | None:
        if not self.switches.reconciled:
            return None
        if self.reports is None:
            counted: dict[int, int] = {}  # proxies holding each snapshot version (shared by its objects)
            return lambda r, _where: self.tracker.progress(r.key, conns, counted)
        try:
            totals = await self.reports.read()
        except (KubeApiError, httpx.HTTPError) as e:
            log.warning("distribution reports not read: %s", e)
            return None

        def summed(r: Resource, where: KubeResource) -> tuple[int, int] | None:
            since = self.tracker.since(r.key)
            return totals.get(resource_string(where, r, since[0])) if since is not None else None
        return summed

    async def parts(self) -> dict[ResourceKey, StatusParts]:
        conns = self.connections()
        messages = await self._messages(len(conns)) if self.switches.analysis else None
        progress = await self._progress(conns)
        out = {}
        for r, where in self.objects():
            out[r.key] = StatusParts(
                messages=messages.get(r.key, ()) if messages is not None else None,
                progress=progress(r, where) if progress is not None else None,
                generation=self.tracker.generation_of(r.key))
        return out


def start(cp: ControlPlane) -> DistributionTracker | None:
    """Run the status writer of the control plane's Kubernetes platform when one of Istio's switches asks for it
    (after the platform's election), and with Reconciled on every replica's distribution report; the tracker its
    pushes must feed (`built`), or None."""
    switches, kube = cp.settings.istio_status, cp.kube
    if kube is None or kube.conn is None or not (switches.analysis or switches.reconciled):
        return None
    assert cp.snapshot is not None and cp.server is not None
    server = cp.server
    tracker = DistributionTracker(kube.store.api_generation)
    tracker.built(cp.snapshot.version, True, [r.key for r, _ in kube.istio_objects()])

    def version() -> int:
        return cp.snapshot.version if cp.snapshot is not None else 0

    reports = None
    if switches.reconciled:  # Istio's reporter on every replica, the leader adding the reports up
        reporter = kube.elector.identity if kube.elector is not None else default_identity()
        reports = DistributionReports(kube.conn, kube.root_namespace, reporter)
    parts = IstioStatusParts(switches, tracker, kube.istio_objects, server.connections, cp.live_documents,
                             lambda: cp.mesh_file, version, reports)
    if reports is not None:
        publisher = reports

        async def publish() -> None:
            await publisher.publish(lambda: parts.report(publisher.reporter))
        kube.background("distribution-report", publish)
    kube.run_istio_status(parts.parts)
    return tracker
