"""One request through Bookinfo (gateway -> productpage -> reviews -> ratings) in the embedded mesh, traced to a
Zipkin-compatible receiver configured by mesh config `extensionProviders` + a mesh-wide Telemetry: one trace, a
correctly parented span per hop, Istio's span names and tags."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sailmesh.processes import free_port
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import DeadlineExceeded, wait_for
from tests.conftest import CONFORMANCE

pytestmark = pytest.mark.e2e
BOOKINFO = CONFORMANCE / "bookinfo"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ZipkinReceiver(http.server.ThreadingHTTPServer):
    """Accepts Zipkin v2 JSON span lists on POST /api/v2/spans and keeps them."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.body()
                ok = self.path == "/api/v2/spans"
                if ok:
                    with receiver.lock:
                        receiver.spans.extend(json.loads(body))
                self.send_response(202 if ok else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def body(self) -> bytes:
                if "chunked" not in self.headers.get("transfer-encoding", ""):
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                out = b""
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def zipkin() -> Iterator[ZipkinReceiver]:
    r = ZipkinReceiver(free_port())
    threading.Thread(target=r.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield r
    r.shutdown()
    r.server_close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    if not BOOKINFO.is_dir():
        pytest.skip(f"Istio's Bookinfo YAMLs not found at {BOOKINFO} (needs ../shared)")
    m = RunningMesh(str(tmp_path_factory.mktemp("tracing-mesh")), demo=True, extra=["--no-routing"])
    yield m
    m.stop()


class OtlpReceiver:
    """An OTLP gRPC trace receiver: opentelemetry-proto's TraceService/Export (the messages from the
    opentelemetry-proto copy the xds protos ship) served with grpcio; spans kept as Zipkin-shaped dicts."""

    SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
    KINDS = {2: "SERVER", 3: "CLIENT"}  # opentelemetry.proto.trace.v1.Span.SpanKind

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts

        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, str]] = []
        self.lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(self.SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=ts.ExportTraceServiceRequest.FromString,
            response_serializer=ts.ExportTraceServiceResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @staticmethod
    def _value(v: Any) -> str:
        kind = v.WhichOneof("value")
        return "" if kind is None else str(getattr(v, kind))

    def _export(self, request: Any, _context: Any) -> Any:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts

        out, resources = [], []
        for rs in request.resource_spans:
            resources.append({a.key: self._value(a.value) for a in rs.resource.attributes})
            # the opentelemetry-proto copy shipped with the xds protos predates the rename of field 2 (same wire
            # format): instrumentation_library_spans there, scope_spans in newer copies
            groups = rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans
            for ss in groups:
                for sp in ss.spans:
                    d: dict[str, Any] = {"traceId": sp.trace_id.hex(), "id": sp.span_id.hex(), "name": sp.name,
                                         "kind": self.KINDS.get(sp.kind, str(sp.kind)),
                                         "tags": {a.key: self._value(a.value) for a in sp.attributes}}
                    if sp.parent_span_id:
                        d["parentId"] = sp.parent_span_id.hex()
                    out.append(d)
        with self.lock:
            self.spans.extend(out)
            self.resources.extend(resources)
        return ts.ExportTraceServiceResponse()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def stop(self) -> None:
        self.server.stop(None).wait()


def mesh_config(port: int, kind: str = "zipkin") -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: zipkin
      zipkin: {{service: 127.0.0.1, port: {port}}}
    - name: otel
      opentelemetry: {{service: 127.0.0.1, port: {port}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: {kind}}}]
    randomSamplingPercentage: 100
"""


def tag(span: dict[str, Any], key: str) -> str:
    return str(span.get("tags", {}).get(key, ""))


def apply_bookinfo(mesh: RunningMesh, cfg: Path) -> None:
    """Bookinfo behind the gateway with reviews v3 (which calls ratings), and the tracing config."""
    for f in (BOOKINFO / "bookinfo-gateway.yaml", BOOKINFO / "destination-rule-all.yaml",
              BOOKINFO / "virtual-service-reviews-v3.yaml", cfg):
        mesh.cli("apply", "-f", str(f), check=True)

    def reviews_v3() -> bool:  # the page shows red stars once reviews v3 (which calls ratings) serves
        with NO_PROXY.open(mesh.gateway_url() + "/api/v1/products/0/reviews", timeout=10) as r:
            rating = json.loads(r.read())["reviews"][0].get("rating") or {}
        return r.status == 200 and rating.get("color") == "red"

    wait_for(reviews_v3, timeout=30, what="reviews v3 behind the gateway")


def test_one_request_one_trace_with_a_span_per_hop(mesh: RunningMesh, zipkin: ZipkinReceiver,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = tmp_path_factory.mktemp("cfg") / "tracing.yaml"
    cfg.write_text(mesh_config(zipkin.server_address[1]))
    apply_bookinfo(mesh, cfg)
    check_one_trace(mesh, zipkin.snapshot, "trace-marker-6d1f0e0c", trace_id_hex_len=32)


def check_one_trace(mesh: RunningMesh, received: Callable[[], list[dict[str, Any]]], marker: str,
                    trace_id_hex_len: int) -> None:
    """Send THE request and check its trace: spans as Zipkin v2 JSON dicts (traceId, id, parentId, kind, name,
    tags), whichever collector received them."""
    hops = {("productpage", "SERVER"), ("productpage", "CLIENT"), ("reviews", "SERVER"), ("reviews", "CLIENT"),
            ("ratings", "SERVER")}

    def whole(trace_id: str) -> list[dict[str, Any]] | None:
        """Every hop's span of one trace (each proxy exports its own batches, so they arrive at different times)."""
        spans = [s for s in received() if s["traceId"] == trace_id]
        sides = {(tag(s, "istio.canonical_service"), s.get("kind")) for s in spans}
        return spans if hops <= sides and len(spans) >= 8 else None

    # tracing is configured once a whole trace reaches the collector (traffic while the config arrives). Any span
    # is not enough: after a provider switch, a connection opened before it stays on the old listener's tracer
    # until it drains, so one proxy can export to the new collector while another hop still sends to the old one.
    def whole_trace_arrives() -> bool:
        with NO_PROXY.open(mesh.gateway_url() + "/productpage", timeout=30) as r:
            assert r.status == 200
        return any(whole(t) for t in {s["traceId"] for s in received()
                                      if "istio.canonical_service" in s.get("tags", {})})
    wait_for(whole_trace_arrives, timeout=120, interval=1.0, what="a whole trace from the mesh")
    # the gateway is the edge: it makes its own x-request-id (Envoy ignores a client's there), so THE request
    # is found by a marker in its URL
    with NO_PROXY.open(mesh.gateway_url() + f"/productpage?m={marker}", timeout=30) as r:
        assert r.status == 200

    def trace() -> list[dict[str, Any]] | None:
        mine = [s for s in received() if marker in tag(s, "http.url")]
        return whole(mine[0]["traceId"]) if mine else None

    def seen() -> str:  # what arrived of THE request's trace, for the failure message
        mine = [s for s in received() if marker in tag(s, "http.url")]
        spans = [s for s in received() if mine and s["traceId"] == mine[0]["traceId"]]
        return repr(sorted((tag(s, "istio.canonical_service"), str(s.get("kind"))) for s in spans))

    try:
        found = wait_for(trace, timeout=30, interval=0.5, what="the request's trace")
    except DeadlineExceeded as e:
        raise AssertionError(f"{e}; its spans that arrived (service, kind): {seen()}") from e
    spans: list[dict[str, Any]] = found or []
    assert {s["traceId"] for s in spans} == {spans[0]["traceId"]}
    assert len(spans[0]["traceId"]) == trace_id_hex_len  # 128-bit
    by_id = {s["id"]: s for s in spans}
    roots = [s for s in spans if "parentId" not in s]
    assert len(roots) == 1 and tag(roots[0], "istio.canonical_service") == "istio-ingressgateway"
    assert roots[0]["kind"] == "SERVER" and marker in tag(roots[0], "http.url")
    # the gateway's request id travels with the request through every hop (the apps propagate it)
    rid = tag(roots[0], "guid:x-request-id")
    assert rid and all(tag(s, "guid:x-request-id") in (rid, "") for s in spans)

    def hop(service: str, kind: str, name_host: str) -> dict[str, Any]:
        found = [s for s in spans if tag(s, "istio.canonical_service") == service and s.get("kind") == kind
                 and s["name"].startswith(name_host)]
        assert found, (service, kind, name_host, [(tag(s, "istio.canonical_service"), s.get("kind"), s["name"])
                                                  for s in spans])
        return found[0]

    # Istio's span names: `<service FQDN>:<port>/*` (route decorators), on both sides of each sidecar hop
    pp_in = hop("productpage", "SERVER", "productpage.default.svc.cluster.local:9080")
    pp_out = hop("productpage", "CLIENT", "reviews.default.svc.cluster.local:9080")
    rv_in = hop("reviews", "SERVER", "reviews.default.svc.cluster.local:9080")
    rv_out = hop("reviews", "CLIENT", "ratings.default.svc.cluster.local:9080")
    ra_in = hop("ratings", "SERVER", "ratings.default.svc.cluster.local:9080")
    # correctly parented: each hop's server span is the child of the caller's client span, and the app's
    # outbound client span the child of its inbound server span (the apps propagate the B3 headers)
    gw_up = by_id[pp_in["parentId"]]  # the gateway's upstream span (Istio spawns one since 1.28)
    assert gw_up["kind"] == "CLIENT" and gw_up["parentId"] == roots[0]["id"]
    assert tag(gw_up, "upstream_cluster") == "outbound|9080||productpage.default.svc.cluster.local"
    assert roots[0]["name"] == "productpage.default.svc.cluster.local:9080/*"  # the gateway route's decorator
    assert pp_out["parentId"] == pp_in["id"]
    assert rv_in["parentId"] == pp_out["id"]
    assert rv_out["parentId"] == rv_in["id"]
    assert ra_in["parentId"] == rv_out["id"]
    for s in (pp_in, pp_out, rv_in, rv_out, ra_in):
        assert tag(s, "istio.namespace") == "default" and tag(s, "istio.mesh_id") == "cluster.local"
        assert tag(s, "node_id").startswith("sidecar~") and tag(s, "http.method") == "GET"
        assert tag(s, "upstream_cluster") and tag(s, "http.url") and tag(s, "http.status_code") == "200"
        assert tag(s, "component") == "proxy"
    assert tag(rv_in, "istio.canonical_revision") == "v3"
    assert tag(pp_out, "upstream_cluster") == "outbound|9080|v3|reviews.default.svc.cluster.local"
    assert tag(ra_in, "upstream_cluster") == "inbound|9080||"

