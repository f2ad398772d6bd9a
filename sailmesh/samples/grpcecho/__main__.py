"""`python -m sailmesh.samples.grpcecho`: serve /sailmesh.Echo/Unary and /sailmesh.Echo/Stream on HOST:PORT.

Unary answers its request; Stream (bidirectional) answers each message with the same bytes. A message starting
with `fail:` ends the call with status INVALID_ARGUMENT (3) and the rest as its details, to show a gRPC error
in the metrics. HOST and PORT come from the environment, as the other samples' (default 127.0.0.1:9080).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

import grpc

from sailmesh.samples.bookinfo.common import configure_logging, listen_address

SERVICE = "sailmesh.Echo"
log = logging.getLogger("grpcecho")
Context = grpc.aio.ServicerContext[bytes, bytes]


async def _unary(request: bytes, context: Context) -> bytes:
    if request.startswith(b"fail:"):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request[5:].decode(errors="replace"))
    return request


async def _stream(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.startswith(b"fail:"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message[5:].decode(errors="replace"))
        yield message


async def serve() -> None:
    """Serve until SIGTERM or SIGINT."""
    host, port = listen_address()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream),
    }),))
    if not server.add_insecure_port(f"{host}:{port}"):
        raise SystemExit(f"cannot listen on {host}:{port}")
    await server.start()
    log.info("listening on %s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    configure_logging("grpcecho")
    asyncio.run(serve())
