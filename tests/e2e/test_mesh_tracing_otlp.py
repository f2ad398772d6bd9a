"""The Bookinfo trace of test_mesh_tracing.py through an OpenTelemetry provider: Envoy's OTLP gRPC exporter to a
real receiver (opentelemetry-proto's TraceService/Export served with grpcio), W3C trace context between the hops.

The mesh first traces to a Zipkin receiver and is then switched to the OpenTelemetry provider by re-applying the
mesh ConfigMap and the Telemetry: what a user does when changing collectors (session 5 saw no OTLP spans after
such a switch: the store took the re-applied ConfigMap, whose content is `data`, not `spec`, as unchanged)."""

from __future__ import annotations

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e import test_mesh_tracing as tracing
from tests.e2e.test_mesh_tracing import (
    NO_PROXY,
    OtlpReceiver,
    ZipkinReceiver,
    apply_bookinfo,
    check_one_trace,
    mesh_config,
)

pytestmark = pytest.mark.e2e


mesh = tracing.mesh  # the same fixtures, so a mesh of this module's own (module scope)
zipkin = tracing.zipkin


def test_otlp_after_switching_from_zipkin_one_request_one_trace(mesh: RunningMesh, zipkin: ZipkinReceiver,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = tmp_path_factory.mktemp("cfg-zipkin") / "tracing.yaml"
    cfg.write_text(mesh_config(zipkin.server_address[1]))
    apply_bookinfo(mesh, cfg)

    def zipkin_spans() -> bool:
        with NO_PROXY.open(mesh.gateway_url() + "/productpage", timeout=30) as r:
            assert r.status == 200
        return any("istio.canonical_service" in s.get("tags", {}) for s in zipkin.snapshot())
    wait_for(zipkin_spans, timeout=120, interval=1.0, what="spans at the Zipkin receiver first")

    receiver = OtlpReceiver()
    try:
        cfg = tmp_path_factory.mktemp("cfg-otel") / "tracing.yaml"
        cfg.write_text(mesh_config(receiver.port, kind="otel"))
        mesh.cli("apply", "-f", str(cfg), check=True)
        check_one_trace(mesh, receiver.snapshot, "otlp-marker-3b9a51d2", trace_id_hex_len=32)
        # Istio's OpenTelemetry provider names the service after the proxy's cluster (`<app>.<namespace>`)
        names = {r.get("service.name", "") for r in receiver.resources}
        assert {"productpage.default", "reviews.default", "ratings.default"} <= names, names
    finally:
        receiver.stop()
