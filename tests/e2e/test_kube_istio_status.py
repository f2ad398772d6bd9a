"""Status of Istio's own kinds on the real API server (PILOT_ENABLE_STATUS, PILOT_ENABLE_ANALYSIS,
PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING), with a real Envoy on ADS: off by default as in Istio; on, the Lease
holder writes the analysis messages and the Reconciled condition through the status subresource, and its writes
cause no further write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sailmesh.controlplane.app import ControlPlane
from sailmesh.settings import IstioStatusSwitches, Settings
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.envoy_proc import ads_bootstrap, running_envoy
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from sailmesh.xds.types import LISTENER
from tests.e2e import kube_support as ks

pytestmark = pytest.mark.e2e
NS = "kt-status"
ROUTE = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: route, namespace: {NS}}}
spec:
  hosts: [web]
  http:
  - route: [{{destination: {{host: nowhere}}}}]
"""
IST0101 = {"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/", "level": "ERROR",
           "type": {"code": "IST0101"}}

kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)


@contextlib.asynccontextmanager
async def control_plane(kube: KubeCluster, state: pathlib.Path, switches: IstioStatusSwitches
                        ) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(ks.options(kube, state, xds_plaintext=True, xds_port=0), Settings(istio_status=switches))
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()


async def route(kube: KubeCluster) -> dict[str, Any]:
    return dict(json.loads(await ks.kubectl(kube, "get", "-n", NS, "virtualservice/route", "-o", "json")))


def reconciled(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c.get("type") == "Reconciled"),
                None)


async def test_istio_kinds_get_no_status_with_the_switches_off(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """Istio's defaults: PILOT_ENABLE_STATUS and PILOT_ENABLE_ANALYSIS are false; istiod writes no status."""
    for ns in ("istio-system", NS):  # the root namespace holds the leader's Lease
        await ks.kubectl(kube, "create", "namespace", ns, check=False)
    async with control_plane(kube, tmp_path / "cp", IstioStatusSwitches(False, False, False)) as cp, \
            running_envoy(ads_bootstrap(f"sidecar~127.0.0.21~a.{NS}~{NS}.svc.cluster.local", cp.opts.xds_port),
                          tmp_path / "envoy"):
        assert cp.distribution is None
        await ks.kubectl(kube, "apply", "-f", "-", input=ROUTE)
        async def stored() -> bool:
            return bool(cp.list_resources("VirtualService", NS, "route"))

        await await_for(stored, timeout=30, what="the VirtualService in the store")
        await asyncio.sleep(2)  # several of the writer's 0.5 s rounds, had it run
        assert "status" not in await route(kube)
    await ks.kubectl(kube, "delete", "-n", NS, "virtualservice/route")


async def test_the_leader_writes_analysis_messages_and_reconciled_as_istio_and_no_write_loop(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """Istio's analysis controller (validationMessages: IST0101 for a destination host nowhere in the mesh) and its
    distribution controller (ReconcileStatuses: Reconciled True when every connected proxy ACKed the object's
    generation, "N/M proxies up to date."), both through the status subresource; a proxy that NACKs is not up to
    date; the writes change no generation, so nothing is pushed or written again."""
    for ns in ("istio-system", NS):
        await ks.kubectl(kube, "create", "namespace", ns, check=False)
    async with control_plane(kube, tmp_path / "cp", IstioStatusSwitches(True, True, True)) as cp, \
            running_envoy(ads_bootstrap(f"sidecar~127.0.0.21~a.{NS}~{NS}.svc.cluster.local", cp.opts.xds_port),
                          tmp_path / "envoy"):
        await ks.kubectl(kube, "apply", "-f", "-", input=ROUTE)

        async def written() -> dict[str, Any] | None:
            obj = await route(kube)
            cond = reconciled(obj)
            ok = cond is not None and cond["status"] == "True" and cond["message"] == "1/1 proxies up to date."
            return obj if ok and obj["status"].get("validationMessages") == [IST0101] else None

        obj = await await_for(written, timeout=30, interval=0.3, what="validationMessages and Reconciled 1/1")
        assert obj["metadata"]["generation"] == 1  # a status write is no spec change
        assert obj["status"]["observedGeneration"] == "1"  # Istio's status manager writes the generation too
        # settled: no write and no push follow from the writer's own writes
        assert cp.kube is not None
        pushes, rv = cp.pushes, obj["metadata"]["resourceVersion"]
        await asyncio.sleep(3)
        assert (cp.pushes, (await route(kube))["metadata"]["resourceVersion"]) == (pushes, rv)

        # a second proxy that refuses the listeners never holds the object: 1/2, False; gone again: 1/1, True
        nack = AdsClient(f"127.0.0.1:{cp.opts.xds_port}", f"sidecar~127.0.0.22~b.{NS}~{NS}.svc.cluster.local",
                         nack=lambda t, _got: "refused by the test" if t == LISTENER else None)
        async with nack:
            async def half() -> bool:
                cond = reconciled(await route(kube))
                return cond is not None and (cond["status"], cond["message"]) == ("False", "1/2 proxies up to date.")

            await await_for(half, timeout=30, interval=0.3, what="Reconciled False, 1/2")

        async def whole() -> bool:
            cond = reconciled(await route(kube))
            return cond is not None and (cond["status"], cond["message"]) == ("True", "1/1 proxies up to date.")

        await await_for(whole, timeout=30, interval=0.3, what="Reconciled True again, 1/1")

        # a spec change with a destination that exists: the messages go (the field is removed), Reconciled stays
        # True once the Envoy ACKed generation 2
        await ks.kubectl(kube, "patch", "-n", NS, "virtualservice/route", "--type", "json", "-p",
                         '[{"op": "replace", "path": "/spec/http/0/route/0/destination/host", "value": "web"}]')
        await ks.kubectl(kube, "apply", "-f", "-", input=f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  ports: [{{name: http, port: 80}}]
""")

        async def cleared() -> bool:
            obj = await route(kube)
            cond = reconciled(obj)
            return obj["metadata"]["generation"] == 2 and "validationMessages" not in obj["status"] \
                and cond is not None and cond["status"] == "True" and obj["status"]["observedGeneration"] == "2"

        await await_for(cleared, timeout=30, interval=0.3, what="the messages cleared for generation 2")
    await ks.kubectl(kube, "delete", "namespace", NS, "--wait=false")


async def test_the_leader_adds_up_every_replicas_distribution_report(kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    """Istio's distribution reports: each replica publishes a ConfigMap `<replica>-distribution` (label
    internal.istio.io/distribution-report) with its proxies and how many hold each object's generation; the leader
    adds them up, so Reconciled counts the proxies of every replica (before: the leader's own only)."""
    ns = "kt-status2"
    for name in ("istio-system", ns):
        await ks.kubectl(kube, "create", "namespace", name, check=False)
    on = IstioStatusSwitches(False, True, True)
    cps = [ControlPlane(ks.options(kube, tmp_path / f"cp{i}", xds_plaintext=True, xds_port=0, leader_lease_s=3.0),
                        Settings(istio_status=on)) for i in range(2)]
    await asyncio.gather(*(cp.start() for cp in cps))
    try:
        async with running_envoy(ads_bootstrap(f"sidecar~127.0.0.31~a.{ns}~{ns}.svc.cluster.local",
                                               cps[0].opts.xds_port), tmp_path / "envoy-a"), \
                running_envoy(ads_bootstrap(f"sidecar~127.0.0.32~b.{ns}~{ns}.svc.cluster.local",
                                            cps[1].opts.xds_port), tmp_path / "envoy-b"):
            await ks.kubectl(kube, "apply", "-f", "-", input=ROUTE.replace(NS, ns))

            async def condition(status: str, message: str) -> bool:
                obj = json.loads(await ks.kubectl(kube, "get", "-n", ns, "virtualservice/route", "-o", "json"))
                cond = reconciled(obj)
                return cond is not None and (cond["status"], cond["message"]) == (status, message)

            async def both() -> bool:
                return await condition("True", "2/2 proxies up to date.")

            await await_for(both, timeout=60, interval=0.3, what="Reconciled 2/2 over both replicas' proxies")
            listed = json.loads(await ks.kubectl(kube, "get", "configmaps", "-n", "istio-system", "-l",
                                                 "internal.istio.io/distribution-report=true", "-o", "json"))
            assert len(listed["items"]) == 2
            # a proxy that refuses the listeners, on the replica that does not lead: counted by the leader too
            follower = next(cp for cp in cps if cp.kube is not None and cp.kube.elector is not None
                            and not cp.kube.elector.is_leader)
            nack = AdsClient(f"127.0.0.1:{follower.opts.xds_port}", f"sidecar~127.0.0.33~c.{ns}~{ns}.svc.cluster.local",
                             nack=lambda t, _got: "refused by the test" if t == LISTENER else None)
            async with nack:
                async def two_of_three() -> bool:
                    return await condition("False", "2/3 proxies up to date.")

                await await_for(two_of_three, timeout=60, interval=0.3, what="Reconciled False, 2/3")
            await await_for(both, timeout=60, interval=0.3, what="Reconciled True again, 2/2")
    finally:
        for cp in cps:
            await cp.stop()

    async def reports_gone() -> bool:  # each replica deletes its report when it stops
        out = await ks.kubectl(kube, "get", "configmaps", "-n", "istio-system", "-l",
                               "internal.istio.io/distribution-report=true", "-o", "name")
        return not out.strip()

    await await_for(reports_gone, timeout=30, interval=0.5, what="the reports deleted")
    await ks.kubectl(kube, "delete", "namespace", ns, "--wait=false")
