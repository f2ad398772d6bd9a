"""A gRPC health check (grpc.health.v1.Health/Check) as Kubernetes' gRPC probe and Istio's agent run one:
plaintext, healthy only when the answer is SERVING. The two messages are encoded by hand (one field each), so no
generated grpc_health module is needed."""

from __future__ import annotations

import grpc

from sailmesh.xds.wire import length_delimited

CHECK_METHOD = "/grpc.health.v1.Health/Check"
# HealthCheckResponse.ServingStatus
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service}: field 1, length-delimited (empty when the service is "")."""
    data = service.encode()
    return length_delimited(1, data) if data else b""


def decode_status(data: bytes) -> int:
    """HealthCheckResponse.status (field 1, varint); 0 (UNKNOWN) when absent. Other fields are skipped."""
    i, status = 0, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        wire = key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            if key >> 3 == 1:
                status = value
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire} in HealthCheckResponse")
    if i > len(data):
        raise ValueError("truncated HealthCheckResponse")
    return status


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint in HealthCheckResponse")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


async def check(host: str, port: int, service: str, timeout: float) -> str | None:
    """None when the server at host:port answers SERVING for `service` within `timeout`, else why not."""
    target = f"{host}:{port}"
    try:
        async with grpc.aio.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            call = channel.unary_unary(CHECK_METHOD, request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            reply = await call(encode_request(service), timeout=timeout, wait_for_ready=True)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return f"grpc {target}: the server does not implement the grpc health protocol (grpc.health.v1.Health)"
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"grpc {target}: no answer within {timeout:g}s"
        return f"grpc {target}: {e.code().name}: {e.details()}"
    try:
        status = decode_status(reply)
    except ValueError as e:
        return f"grpc {target}: {e}"
    if status == SERVING:
        return None
    return f"grpc {target}: service {service!r} is {STATUS_NAMES.get(status, str(status))}"
