"""Access logs and tracers from the Telemetry API / mesh config, in a real Envoy: accepted, and they log real traffic
in Istio's formats (text, JSON), with response flags, filtered by CEL."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import subprocess

import pytest

from sailmesh.api import meshconfig
from sailmesh.processes import envoy_binary, free_port
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.telemetry import access_log
from sailmesh.testing.waiting import random_loopback_block, wait_for
from tests.e2e import test_generate_envoy as gen
from tests.e2e.test_generate_envoy import Backend, get, pods, start, static_bootstrap, write_bootstrap
from tests.unit.test_generate_support import bookinfo_services, gateway_proxy, make_snapshot, resources, sidecar

pytestmark = pytest.mark.e2e
backends = gen.backends  # the generator e2e module's fixtures: backends started, Envoys run (both cleaned up)
envoy = gen.envoy

RATINGS_ABORT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
"""


def telemetry(spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip().splitlines())
    return f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh, namespace: istio-system}}\n" \
           f"spec:\n{body}\n"


def snapshot(block: str, mesh: dict[str, object], *config: str) -> MeshSnapshot:
    s = make_snapshot(resources(RATINGS_ABORT, *config), bookinfo_services(), pods(block))
    return dataclasses.replace(s, mesh_config=meshconfig.from_mapping(mesh))


def test_envoy_accepts_tracers_and_cel_filtered_logs(tmp_path: pathlib.Path, conformance: pathlib.Path) -> None:
    block = random_loopback_block()
    mesh = {"extensionProviders": [
        {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411,
                                      "traceContextOption": "USE_B3_WITH_W3C_PROPAGATION"}},
        {"name": "otel", "opentelemetry": {"service": "127.0.0.1", "port": 4317}},
        {"name": "log", "envoyFileAccessLog": {"path": str(tmp_path / "a.log"),
                                               "logFormat": {"labels": {"c": "%RESPONSE_CODE%"}}}}]}
    tel = telemetry("""
tracing: [{match: {mode: CLIENT}, providers: [{name: zipkin}], customTags: {e: {environment: {name: HOME}}}},
          {match: {mode: SERVER}, providers: [{name: otel}], randomSamplingPercentage: 100}]
accessLogging: [{providers: [{name: log}], filter: {expression: "response.code >= 400"}}]
""")
    gw = str((conformance / "bookinfo" / "bookinfo-gateway.yaml").read_text())
    for proxy in (sidecar(ip=f"{block}.1"), gateway_proxy(f"{block}.100")):
        path = write_bootstrap(tmp_path, static_bootstrap(snapshot(block, mesh, tel, gw), proxy, free_port()))
        r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                            "-l", "warning"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (proxy.type, r.stdout[-3000:], r.stderr[-3000:])


def lines(path: pathlib.Path, n: int) -> list[str]:
    """The first n lines Envoy wrote to path (it flushes access logs about every second)."""
    def ready() -> list[str] | None:
        got = path.read_text().splitlines() if path.exists() else []
        return got if len(got) >= n else None
    out: list[str] = wait_for(ready, timeout=15, what=f"{n} access log lines in {path}")
    return out


@pytest.fixture
def bookinfo_sidecar(tmp_path: pathlib.Path, backends: list[Backend], envoy):  # type: ignore[no-untyped-def]
    """Start reviews and ratings backends; returns a function that runs productpage's sidecar for a snapshot."""
    block = random_loopback_block()
    for name, ip in (("reviews-v1-0", f"{block}.3"), ("ratings-v1-0", f"{block}.6")):
        b = Backend(name, ip, 9080)
        start(b)
        backends.append(b)

    def run(mesh: dict[str, object], *config: str) -> str:
        proxy = sidecar(ip=f"{block}.1")
        envoy(static_bootstrap(snapshot(block, mesh, *config), proxy, free_port()))
        return proxy.ip
    return run


TEXT_LINE = re.compile(r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>\S+)" (?P<code>\d+) '
                       r'(?P<flags>\S+) (?P<details>\S+) ')


def test_text_access_log_with_fault_flag(tmp_path: pathlib.Path, bookinfo_sidecar) -> None:  # type: ignore[no-untyped-def]
    # mesh config accessLogFile + TEXT (Istio's default encoding): Istio's EnvoyTextLogFormat
    log = tmp_path / "text.log"
    ip = bookinfo_sidecar({"accessLogFile": str(log)})
    assert get(ip, 15001, "http://reviews:9080/reviews/1")[0] == 200
    assert get(ip, 15001, "http://ratings:9080/ratings/0")[0] == 500  # the VirtualService's abort
    ok, fault = (TEXT_LINE.match(x) for x in lines(log, 2))
    assert ok and (ok["method"], ok["path"], ok["proto"], ok["code"], ok["flags"]) == \
        ("GET", "/reviews/1", "HTTP/1.1", "200", "-")
    assert fault and (fault["path"], fault["code"], fault["flags"]) == ("/ratings/0", "500", "FI")  # fault injected
    assert "outbound|9080||reviews.default.svc.cluster.local" in lines(log, 2)[0]  # %UPSTREAM_CLUSTER_RAW%


def test_json_access_log_has_istios_keys(tmp_path: pathlib.Path, bookinfo_sidecar) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "json.log"
    ip = bookinfo_sidecar({"accessLogFile": str(log), "accessLogEncoding": "JSON"})
    get(ip, 15001, "http://reviews:9080/reviews/1")
    get(ip, 15001, "http://ratings:9080/ratings/0")
    ok, fault = (json.loads(x) for x in lines(log, 2))
    assert set(ok) == set(access_log.JSON_LABELS)  # Istio's EnvoyJSONLogFormatIstio labels
    assert (ok["method"], ok["path"], ok["response_code"], ok["response_flags"]) == ("GET", "/reviews/1", 200, "-")
    assert (fault["response_code"], fault["response_flags"]) == (500, "FI")


def test_telemetry_cel_filter_logs_only_failures(tmp_path: pathlib.Path, bookinfo_sidecar) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "failures.log"
    mesh = {"extensionProviders": [{"name": "failures", "envoyFileAccessLog": {"path": str(log)}}]}
    tel = telemetry('accessLogging: [{providers: [{name: failures}], filter: {expression: "response.code >= 400"}}]')
    ip = bookinfo_sidecar(mesh, tel)
    for _ in range(3):
        assert get(ip, 15001, "http://reviews:9080/reviews/1")[0] == 200
    assert get(ip, 15001, "http://ratings:9080/ratings/0")[0] == 500
    assert get(ip, 15001, "http://reviews:9080/reviews/2")[0] == 200
    (only,) = lines(log, 1)[:1]
    m = TEXT_LINE.match(only)
    assert m and (m["path"], m["code"], m["flags"]) == ("/ratings/0", "500", "FI")
    # the 200s were filtered out: one more failure is the second line, with no success in between
    assert get(ip, 15001, "http://ratings:9080/ratings/1")[0] == 500
    assert [TEXT_LINE.match(x)["code"] for x in lines(log, 2)] == ["500", "500"]  # type: ignore[index]
