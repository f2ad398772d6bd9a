"""exec and grpc probes: grpc.health.v1 Health/Check as Kubernetes' gRPC probe and Istio's agent run it (SERVING is
healthy; NOT_SERVING, SERVICE_UNKNOWN, UNIMPLEMENTED, no answer are not; the agent's rewritten path answers 200 or
500, pilot-agent's handleAppProbeGRPC), and the kubelet's exec probe (exit status 0 is healthy; killed and failed
after timeoutSeconds; the app's environment and working directory)."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from sailmesh.agent import grpchealth
from sailmesh.agent.health import probe_check
from sailmesh.agent.probes import parse_app_probers
from sailmesh.platform.kubelet import exec_check
from sailmesh.platform.probes import Probe
from sailmesh.platform.workloads import Instance


def test_messages_are_encoded_as_grpc_health_v1() -> None:
    assert grpchealth.encode_request("") == b""
    assert grpchealth.encode_request("liveness") == b"\x0a\x08liveness"
    assert grpchealth.decode_status(b"\x08\x01") == grpchealth.SERVING
    assert grpchealth.decode_status(b"") == 0  # UNKNOWN: the field is absent
    assert grpchealth.decode_status(b"\x12\x02hi\x08\x02") == 2  # an unknown field is skipped
    with pytest.raises(ValueError):
        grpchealth.decode_status(b"\x08")


STATUSES = {"": 1, "down": 2}  # service -> status; others: SERVICE_UNKNOWN


@pytest.fixture
async def health_server() -> AsyncIterator[int]:
    async def check(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        service = request[2:].decode() if request else ""
        return bytes([8, STATUSES.get(service, 3)])

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(check, request_deserializer=lambda b: b,
                                                  response_serializer=lambda b: b)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpc.health.v1.Health",
                                                                          {"Check": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def test_grpc_check_is_healthy_only_when_serving(health_server: int) -> None:
    assert await grpchealth.check("127.0.0.1", health_server, "", 2) is None
    assert "is NOT_SERVING" in str(await grpchealth.check("127.0.0.1", health_server, "down", 2))
    assert "is SERVICE_UNKNOWN" in str(await grpchealth.check("127.0.0.1", health_server, "other", 2))


async def test_grpc_check_of_a_server_without_the_health_service_or_no_server() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        why = await grpchealth.check("127.0.0.1", port, "", 2)
        assert why is not None and "does not implement the grpc health protocol" in why
    finally:
        await server.stop(0)
    began = time.monotonic()
    assert "no answer within 0.5s" in str(await grpchealth.check("127.0.0.1", port, "", 0.5))
    assert time.monotonic() - began < 5


async def test_the_agent_answers_a_rewritten_grpc_probe_200_or_500(health_server: int) -> None:
    probers = parse_app_probers("127.0.0.1", f'{{"/app-health/a/readyz": {{"grpc": {{"port": {health_server}}}}}, '
                                             f'"/app-health/a/livez": {{"grpc": {{"port": {health_server}, '
                                             f'"service": "down"}}, "timeoutSeconds": 2}}}}')
    assert await probers["/app-health/a/readyz"]() == (200, "")
    status, why = await probers["/app-health/a/livez"]()
    assert status == 500 and "NOT_SERVING" in why
    # the sidecar's own readiness (15021) with a grpc readinessProbe
    ready = probe_check("127.0.0.1", {"kind": "grpc", "port": health_server, "service": "down"})
    assert "NOT_SERVING" in str(await ready())
    assert await probe_check("127.0.0.1", {"kind": "grpc", "port": health_server})() is None


def _inst(cwd: pathlib.Path) -> Instance:
    return Instance(name="w-0", workload="w", namespace="default", ip="127.0.0.1", labels={}, service_account="sa",
                    command=("true",), env={}, ports=(), cwd=str(cwd))


async def test_exec_probe_runs_with_the_apps_environment_and_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "healthy").write_text("")
    probe = Probe(kind="exec", command=("sh", "-c", 'test -e healthy && test "$MARK" = yes'))
    assert await exec_check(_inst(tmp_path), "livenessProbe", probe, {"MARK": "yes", "PATH": "/usr/bin:/bin"})() \
        is None
    failed = await exec_check(_inst(tmp_path), "livenessProbe", probe, {"MARK": "no", "PATH": "/usr/bin:/bin"})()
    assert failed == "app liveness probe: exec sh -c test -e healthy && test \"$MARK\" = yes: exit status 1"
    said = await exec_check(_inst(tmp_path), "readinessProbe",
                            Probe(kind="exec", command=("sh", "-c", "echo not ready yet; exit 3")), None)()
    assert said is not None and said.endswith("exit status 3 (not ready yet)")
    missing = await exec_check(_inst(tmp_path), "readinessProbe", Probe(kind="exec", command=("/no/such",)), None)()
    assert missing is not None and "No such file" in missing


async def test_exec_probe_is_killed_after_its_timeout(tmp_path: pathlib.Path) -> None:
    began = time.monotonic()
    probe = Probe(kind="exec", command=("sh", "-c", "sleep 30 & sleep 30"), timeout_s=0.5)
    why = await exec_check(_inst(tmp_path), "livenessProbe", probe, None)()
    assert why is not None and why.endswith("timed out after 0.5s")
    assert time.monotonic() - began < 10  # the whole process group was killed, not waited for
