"""`python -m bench.controlplane.grpc_floor`: what one grpc.aio event loop needs to push to N streams, without sailmesh.

The floor under the control plane's convergence time: a bare grpc.aio server (same options and pass-through
serializer as the ADS server, no resource generation, no bookkeeping) writes one pre-serialized
DiscoveryResponse of `--size` bytes to each of `--streams` ADS streams and waits until every stream's client
has answered with a request carrying the response's nonce (an ACK). Clients run in worker processes on the
same machine, as in the control-plane benchmark. Prints wall time and server CPU per round.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import pathlib
import statistics
import sys
import time
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.jsonout import to_json
from sailmesh.server.ads import SERVER_OPTIONS

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class _Floor:
    """Streams register a queue; a round puts one response into every queue and waits for all ACKs."""

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue[bytes | None]] = []
        self.acks = 0
        self.want = -1
        self.done = asyncio.Event()

    async def handler(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queues.append(queue)

        async def read() -> None:
            async for _ in requests:
                self.acks += 1
                if self.acks == self.want:
                    self.done.set()

        reader = asyncio.create_task(read())
        try:
            while (message := await queue.get()) is not None:
                await context.write(message)
        finally:
            reader.cancel()


async def _serve(streams: int, size: int, rounds: int, workers: int, own_connections: bool) -> dict[str, Any]:
    floor = _Floor()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.stream_stream_rpc_method_handler(
        floor.handler, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
        response_serializer=lambda b: b)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"StreamAggregatedResources": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ctx = multiprocessing.get_context("spawn")
    shares = [streams // workers + (1 if k < streams % workers else 0) for k in range(workers)]
    procs = [ctx.Process(target=_client_main, args=(port, n, own_connections), daemon=True) for n in shares if n]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 60
        while len(floor.queues) < streams or floor.acks < streams:  # every stream connected and sent its request
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(floor.queues)} of {streams} streams connected")
            await asyncio.sleep(0.05)
        message = discovery_pb2.DiscoveryResponse(
            version_info="1", type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration", nonce="1-0",
            resources=[{"type_url": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                        "value": b"\0" * size}]).SerializeToString()
        out: list[dict[str, float]] = []
        for _ in range(rounds):
            floor.acks, floor.want, floor.done = 0, streams, asyncio.Event()
            cpu0, t0 = time.process_time(), time.perf_counter()
            for queue in floor.queues:
                queue.put_nowait(message)
            await asyncio.wait_for(floor.done.wait(), 60)
            out.append({"wall_ms": (time.perf_counter() - t0) * 1e3,
                        "server_cpu_ms": (time.process_time() - cpu0) * 1e3})
        for queue in floor.queues:
            queue.put_nowait(None)
        return {"streams": streams, "size": size, "own_connections": own_connections, "rounds": out,
                "median_wall_ms": statistics.median(r["wall_ms"] for r in out),
                "median_server_cpu_ms": statistics.median(r["server_cpu_ms"] for r in out)}
    finally:
        for p in procs:
            p.kill()
        await server.stop(0)


def _client_main(port: int, n: int, own_connections: bool = False) -> None:
    """n ADS streams, on one channel or each on its own TCP connection (like Envoys and the benchmark's lean
    clients): each sends a first request, then ACKs every response with its nonce."""

    async def main() -> None:
        shared = None if own_connections else grpc.aio.insecure_channel(f"127.0.0.1:{port}")

        async def stream() -> None:
            channel = shared or grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                                          options=[("grpc.use_local_subchannel_pool", 1)])
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            out: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
            out.put_nowait(discovery_pb2.DiscoveryRequest(type_url="x"))

            async def requests() -> Any:
                while True:
                    yield await out.get()

            async for response in stub.StreamAggregatedResources(requests()):
                out.put_nowait(discovery_pb2.DiscoveryRequest(type_url=response.type_url,
                                                              version_info=response.version_info,
                                                              response_nonce=response.nonce))

        await asyncio.gather(*(stream() for _ in range(n)))

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.controlplane.grpc_floor", description=__doc__)
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--size", type=int, default=20_000, help="bytes of resources per response")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="client processes")
    p.add_argument("--connections", choices=["shared", "per-stream"], default="shared",
                   help="one channel per client process (HTTP/2 multiplexing), or a TCP connection per stream as "
                        "Envoys and the benchmark's lean clients have")
    p.add_argument("--json", help="where to write the result document")
    a = p.parse_args(argv)
    res = asyncio.run(_serve(a.streams, a.size, a.rounds, a.workers, a.connections == "per-stream"))
    res["loadavg"] = os.getloadavg()
    print(f"bare grpc.aio: {a.streams} streams ({a.connections} connections) x {a.size} B, {a.rounds} rounds: "
          f"push + all ACKs median "
          f"{res['median_wall_ms']:.1f} ms wall, {res['median_server_cpu_ms']:.1f} ms server CPU "
          f"({res['median_server_cpu_ms'] / a.streams * 1e3:.0f} µs per stream)")
    if a.json:
        pathlib.Path(a.json).write_text(to_json(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
