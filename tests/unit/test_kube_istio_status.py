"""Status of Istio's own kinds (PILOT_ENABLE_STATUS, PILOT_ENABLE_ANALYSIS, PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING)
without a server: the switches, Istio's Reconciled condition (ReconcileStatuses), the validationMessages shape,
which proxies hold an object's generation, and the writer's patches (no write loop). Against the real API server
with a real Envoy: tests/e2e/test_kube_istio_status.py."""

from __future__ import annotations

from typing import Any

import pytest

from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.controlplane.distribution import DistributionTracker, holds
from sailmesh.platform.kube.informer import KubeResource
from sailmesh.platform.kube.istiostatus import (
    IstioStatusWriter,
    StatusParts,
    desired_status,
    reconciled_conditions,
    validation_message,
)
from sailmesh.platform.kube.store import KubeStore
from sailmesh.server.connection import ConnectionStatus, TypeStatus
from sailmesh.settings import IstioStatusSwitches

VS = KubeResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
KEY = ResourceKey("VirtualService", "web", "route")
IST0101 = validation_message("IST0101", "Error", "https://istio.io/latest/docs/reference/config/analysis/ist0101/")


def test_the_switches_read_istios_names_and_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Istio's pilot/pkg/features: PILOT_ENABLE_STATUS, PILOT_ENABLE_ANALYSIS and
    PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING default false; the distribution controller (Reconciled) runs only with
    EnableStatus && EnableDistributionTracking."""
    for name in ("PILOT_ENABLE_STATUS", "PILOT_ENABLE_ANALYSIS", "PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING"):
        monkeypatch.delenv(name, raising=False)
    off = IstioStatusSwitches()
    assert (off.status, off.analysis, off.distribution_tracking, off.reconciled) == (False, False, False, False)
    monkeypatch.setenv("PILOT_ENABLE_STATUS", "true")
    assert not IstioStatusSwitches().reconciled  # tracking still off
    monkeypatch.setenv("PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING", "1")
    monkeypatch.setenv("PILOT_ENABLE_ANALYSIS", "T")
    on = IstioStatusSwitches()
    assert on.reconciled and on.analysis


def test_validation_messages_have_istios_analysis_message_base_shape() -> None:
    """Istio's Message.AnalysisMessageBase: documentationUrl, level as the Level enum's name, type.code."""
    assert IST0101 == {"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
                       "level": "ERROR", "type": {"code": "IST0101"}}
    assert validation_message("IST0102", "Info", "u")["level"] == "INFO"
    assert validation_message("IST0002", "Warning", "u")["level"] == "WARNING"


def test_the_reconciled_condition_follows_istios_reconcile_statuses() -> None:
    """Istio's distribution.ReconcileStatuses: Reconciled True iff acked == total, message "N/M proxies up to
    date.", replaced only when status or message change; other conditions kept."""
    other = {"type": "PassedValidation", "status": "True", "message": "just a test, here"}
    first = reconciled_conditions([other], 1, 2, "t1")
    assert first == [other, {"type": "Reconciled", "status": "False", "lastProbeTime": "t1",
                             "lastTransitionTime": "t1", "message": "1/2 proxies up to date."}]
    assert reconciled_conditions(first, 1, 2, "t2") == first  # unchanged: nothing to write, times kept
    done = reconciled_conditions(first, 2, 2, "t3")
    assert done[1]["status"] == "True" and done[1]["message"] == "2/2 proxies up to date."
    assert done[1]["lastTransitionTime"] == "t3" and done[0] == other


def test_desired_status_sets_and_clears_messages_and_skips_progress_without_proxies() -> None:
    current = {"validationMessages": [IST0101], "conditions": [], "observedGeneration": "3"}
    assert desired_status(current, StatusParts(messages=()), "t") == {"conditions": [], "observedGeneration": "3"}
    assert desired_status({}, StatusParts(messages=(IST0101,)), "t") == {"validationMessages": [IST0101]}
    assert desired_status({}, StatusParts(progress=(0, 0)), "t") == {}  # Istio writes only for TotalInstances > 0
    assert desired_status({}, StatusParts(), "t") == {}  # both switches off: nothing
    # Istio's status manager: observedGeneration, the object's generation (int64: a string in proto3 JSON)
    assert desired_status({}, StatusParts(messages=(), generation=3), "t") == {"observedGeneration": "3"}
    assert desired_status({}, StatusParts(generation=3), "t") == {}


def conn(idle: str, **types: tuple[str, str, bool]) -> ConnectionStatus:
    """A connection idle at `idle`, each type (sent_nonce, acked_version, synced)."""
    ts = {name: TypeStatus(name, name, True, (), "", nonce, acked, "", "", 1, 1, synced)
          for name, (nonce, acked, synced) in types.items()}
    return ConnectionStatus("c", "sidecar~1.1.1.1~a.web~web.svc.cluster.local", "c", 0.0, False, ts, 1, "",
                            idle_version=idle)


def test_a_proxy_holds_a_version_once_it_caught_up_and_acked_every_type() -> None:
    """Istio counts a proxy for a resource's generation once it ACKed a push holding it (a NACK does not count)."""
    assert holds(conn("7", lds=("n1", "7", True), cds=("n2", "5", True)), 7)  # CDS unchanged since 5: synced
    assert not holds(conn("6", lds=("n1", "6", True)), 7)  # the push of 7 not served yet
    assert not holds(conn("7", lds=("n1", "6", False)), 7)  # sent 7, ACK outstanding (or NACKed)
    assert holds(conn("8", lds=("n1", "7.2", False)), 7)  # 8 not ACKed yet, but 7 was
    assert holds(conn("7", eds=("", "", False)), 7)  # a type with nothing sent holds nothing


def test_the_tracker_dates_a_generation_by_the_last_push() -> None:
    gens: dict[ResourceKey, int] = {KEY: 1}
    t = DistributionTracker(gens.get)
    t.built(3, True, [KEY])
    assert t.since(KEY) == (1, 3)
    t.built(4, False, [KEY])  # same generation: not re-dated
    gens[KEY] = 2
    t.built(5, False, [KEY])  # a build that pushed nothing: the proxies' config is still push 3's
    assert t.since(KEY) == (2, 3)
    gens[KEY] = 3
    t.built(6, True, [KEY])
    assert t.since(KEY) == (3, 6)
    assert t.progress(KEY, [conn("6", lds=("n", "6", True)), conn("5", lds=("n", "5", True))]) == (1, 2)
    counted: dict[int, int] = {}
    assert t.progress(KEY, [conn("6", lds=("n", "6", True))], counted) == (1, 1) and counted == {6: 1}
    assert t.progress(KEY, [conn("5", lds=("n", "5", True))], counted) == (1, 1)  # one count per version a round
    del gens[KEY]
    t.built(7, True, [KEY])
    assert t.since(KEY) is None and t.progress(KEY, []) is None


def test_the_store_keeps_the_api_servers_generation() -> None:
    store = KubeStore()
    obj = vs_obj(generation=4)
    store.upserted(VS, obj)
    assert store.api_generation(KEY) == 4
    store.deleted(VS, obj)
    assert store.api_generation(KEY) is None


def vs_obj(generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "route", "namespace": "web", "generation": generation,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
            **({"status": status} if status is not None else {})}


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    async def send_json(self, method: str, path: str, body: Any, content_type: str) -> Any:
        self.sent.append((method, path, body))
        return {}


async def test_the_writer_patches_the_status_subresource_once_and_clears_what_went() -> None:
    """A status write changes nothing the writer reads: the next rounds write nothing (no loop)."""
    r: Resource = resource_from_dict(vs_obj(status={"validationMessages": [IST0101]}))
    parts = {KEY: StatusParts(messages=(), progress=(1, 1), generation=1)}

    async def parts_of() -> dict[ResourceKey, StatusParts]:
        return parts

    fake = FakeConn()
    writer = IstioStatusWriter(fake, lambda: [(r, VS)], parts_of)  # type: ignore[arg-type]
    assert await writer.reconcile() == 1
    [(method, path, body)] = fake.sent
    assert (method, path) == ("PATCH", "/apis/networking.istio.io/v1/namespaces/web/virtualservices/route/status")
    assert body["status"]["validationMessages"] is None  # merge patch: the messages went
    [cond] = body["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["message"]) == ("Reconciled", "True", "1/1 proxies up to date.")
    assert body["status"]["observedGeneration"] == "1"
    assert await writer.reconcile() == 0 and await writer.reconcile() == 0
    parts = {KEY: StatusParts(messages=(IST0101,), progress=(1, 2), generation=1)}
    assert await writer.reconcile() == 1
    status = fake.sent[-1][2]["status"]
    assert status["validationMessages"] == [IST0101] and status["conditions"][0]["status"] == "False"
    assert await writer.reconcile() == 0


def test_distribution_reports_add_up_as_istios_leader() -> None:
    """Istio's DistributionReport (reporter, dataPlaneCount, inProgressResources keyed by
    group/version/plural/namespace/name/generation) and writeAllStatus: per object, the acked and connected proxies
    of every report naming it; a reporter not heard from for a minute (StaleInterval) is left out."""
    from sailmesh.platform.kube.distreport import add_up, report, resource_string

    r = resource_from_dict(vs_obj(generation=2))
    key = resource_string(VS, r, 2)
    assert key == "networking.istio.io/v1/virtualservices/web/route/2"
    a, b = report("istiod-a", 2, {key: 2}), report("istiod-b", 3, {key: 1})
    assert a == {"reporter": "istiod-a", "dataPlaneCount": 2, "inProgressResources": {key: 2}}
    assert add_up([(a, 100.0), (b, 100.0)], now=110.0) == {key: (3, 5)}
    assert add_up([(a, 100.0), (b, 40.0)], now=110.0) == {key: (2, 2)}  # b is stale
    assert add_up([(a, 100.0), (report("istiod-c", 4, {}), 100.0)], now=110.0) == {key: (2, 2)}  # c names none


def test_report_configmaps_are_no_config_and_their_names_are_valid() -> None:
    from sailmesh.platform.kube.distreport import LABEL, DistributionReports

    store = KubeStore()
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "istiod-a-distribution", "namespace": "istio-system", "labels": {LABEL: "true"}},
          "data": {"distribution-report": "reporter: istiod-a\n"}}
    store.upserted(KubeResource("", "v1", "configmaps", "ConfigMap"), cm)
    assert store.keys() == set() and store.rejected() == []
    assert DistributionReports(None, "istio-system", "Host_1a2b3c4d").name == "host-1a2b3c4d-distribution"  # type: ignore[arg-type]
