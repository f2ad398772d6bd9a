"""The control plane's own metrics on :15014/metrics, Istio's names, one prometheus_client registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.settings import Settings

BAD_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "bad", "namespace": "default"}, "spec": {"hosts": ["x"], "http": [{"timeout": "soon"}]}}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_validation_failures_and_the_cas_counters_are_on_the_control_planes_page() -> None:
    cp = ControlPlane(ControlPlaneOptions(), Settings())
    errors = (await cp.apply_documents([{"doc": BAD_VS, "file": "bad.yaml", "line": 1}])).errors
    assert errors  # rejected, as Istio's webhook would
    s = samples(cp.metrics_text())
    # Istio's webhook: galley_validation_failed{group, version, resource, reason}.
    assert s["galley_validation_failed"] == [({"group": "networking.istio.io", "version": "v1",
                                               "resource": "virtualservices", "reason": "invalid_resource"}, 1.0)]
    # The CA increments these (tests/unit/test_ca_service.py); they exist from the start, at 0, under Istio's names.
    assert s["citadel_server_csr_count"] == [({}, 0.0)]
    assert s["citadel_server_success_cert_issuance_count"] == [({}, 0.0)]
    # Istio's pilot metrics are on the same page even before a proxy connects; the snapshot version too.
    for name in ("pilot_xds", "pilot_total_xds_internal_errors", "sailmesh_snapshot_version"):
        assert name in s, name
