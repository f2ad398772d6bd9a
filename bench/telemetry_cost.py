"""`python -m bench.telemetry_cost`: the agent's CPU per request for Istio's standard metrics, in isolation.

Streams access-log entries shaped like Envoy's (peer metadata, authority, sizes, durations; batches of the size
Envoy's 16 KiB buffer holds) through the agent's real gRPC access-log server on a Unix socket, and divides
the process CPU time by the number of entries. The sender runs in a separate process so that only the
receiving side is measured. Prints µs per entry and the vCPU the agent needs per 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench.jsonout import to_json


def _entries(batch: int, source: bool) -> bytes:
    from envoy.service.accesslog.v3 import als_pb2

    from sailmesh.telemetry import peer

    md = peer.encode("bench-client-0", "default", {"app": "bench-client", "version": "v1"})
    msg = als_pb2.StreamAccessLogsMessage()
    for i in range(batch):
        e = msg.http_logs.log_entry.add()
        cp = e.common_properties
        cp.upstream_cluster = "inbound|8080||"
        cp.duration.FromMicroseconds(700 + i % 500)
        cp.metadata.filter_metadata[peer.PEER_NAMESPACE].update({peer.PEER_KEY: md, "id": "sidecar~x~y~z"})
        cp.downstream_remote_address.socket_address.address = "127.0.0.2"
        cp.start_time.FromMicroseconds(1_700_000_000_000_000 + i)
        e.request.authority = "bench-backend:8080"
        e.request.path = "/"
        e.request.request_id = f"{i:032x}"
        e.request.request_headers_bytes = 180
        e.response.response_code.value = 200
        e.response.response_headers_bytes, e.response.response_body_bytes = 120, 1024
        if source:  # the source reporter's entries: the upstream TLS peer as custom tags (names.py)
            cp.upstream_cluster = "outbound|8080||bench-backend.default.svc.cluster.local"
            cp.custom_tags["istio.upstream_peer"] = "spiffe://cluster.local/ns/default/sa/bench-backend"
            cp.custom_tags["istio.upstream_local"] = "spiffe://cluster.local/ns/default/sa/bench-client"
    return bytes(msg.SerializeToString())


def _send(path: str, batches: int, batch: int, source: bool) -> None:
    import grpc
    from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

    body = als_pb2.StreamAccessLogsMessage.FromString(_entries(batch, source))

    def messages() -> Iterator[Any]:
        first = als_pb2.StreamAccessLogsMessage()
        first.CopyFrom(body)
        first.identifier.log_name = "istio|source" if source else \
            "istio|destination|bench-backend.default.svc.cluster.local"
        yield first
        for _ in range(batches - 1):
            yield body

    with grpc.insecure_channel("unix:" + path) as channel:
        als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(messages())


async def _measure(batches: int, batch: int, source: bool = False) -> dict[str, float]:
    from sailmesh.agent.telemetry import AccessLogServer, IstioMetrics, local_workload

    metrics = IstioMetrics(local_workload("bench-backend-0", "default", {"app": "bench-backend"}, "Kubernetes"))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "als.sock")
        server = AccessLogServer(metrics, path)
        await server.start()
        try:
            ctx = multiprocessing.get_context("spawn")
            sender = ctx.Process(target=_send, args=(path, batches, batch, source))
            cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            sender.start()
            while sender.is_alive() or metrics.entries < batches * batch:
                await asyncio.sleep(0.01)
                if not sender.is_alive() and sender.exitcode not in (0, None):
                    raise SystemExit(f"sender failed with {sender.exitcode}")
            cpu1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
        finally:
            await server.stop()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    n = metrics.entries
    return {"entries": n, "batch": batch, "cpu_s": cpu, "wall_s": wall, "us_per_entry": cpu / n * 1e6,
            "vcpu_per_1k_rps": cpu / n * 1000.0}


def _counting(entries: int, batch: int, source: bool) -> dict[str, float]:
    """The agent's counting alone, in-process: parse each message and call record_http per entry (no gRPC)."""
    from envoy.service.accesslog.v3 import als_pb2

    from sailmesh.agent.telemetry import IstioMetrics, local_workload

    raw = _entries(batch, source)
    metrics = IstioMetrics(local_workload("bench-backend-0", "default", {"app": "bench-backend"}, "Kubernetes"))
    reporter, services = ("source", ()) if source else ("destination", ("bench-backend.default.svc.cluster.local",))
    batches = max(1, entries // batch)
    cpu0 = time.process_time()
    for _ in range(batches):
        for e in als_pb2.StreamAccessLogsMessage.FromString(raw).http_logs.log_entry:
            metrics.record_http(reporter, services, e)
    cpu = time.process_time() - cpu0
    n = metrics.entries
    return {"entries": n, "batch": batch, "cpu_s": cpu, "wall_s": cpu, "us_per_entry": cpu / n * 1e6,
            "vcpu_per_1k_rps": cpu / n * 1000.0}


async def _serve(paths: list[str]) -> None:
    from sailmesh.agent.telemetry import AccessLogServer, IstioMetrics, local_workload

    servers = [AccessLogServer(IstioMetrics(local_workload("bench-0", "default", {}, "Kubernetes")), p) for p in paths]
    for srv in servers:
        await srv.start()
    print("serving", flush=True)
    await asyncio.Event().wait()  # until killed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.telemetry_cost", description=__doc__)
    p.add_argument("--serve", nargs="*", metavar="SOCKET",
                   help="only serve the agent's access-log service on these sockets until killed (ablation)")
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=40, help="entries per message (16 KiB of ~400-byte entries)")
    p.add_argument("--source", action="store_true",
                   help="the source reporter's entries (outbound cluster, upstream TLS peer custom tags)")
    p.add_argument("--counting-only", action="store_true",
                   help="only the agent's parsing and counting, in-process (no gRPC), by process CPU time")
    p.add_argument("--json", default="", help="write the result here too")
    a = p.parse_args(argv)
    if a.serve:
        asyncio.run(_serve(a.serve))
        return 0
    if a.counting_only:
        r = _counting(a.entries, a.batch, a.source)
    else:
        r = asyncio.run(_measure(max(1, a.entries // a.batch), a.batch, a.source))
    r["loadavg"] = os.getloadavg()[0]
    kind = "source" if a.source else "destination"
    print(f"{r['entries']} {kind} entries in batches of {r['batch']}: {r['us_per_entry']:.1f} µs CPU per entry = "
          f"{r['vcpu_per_1k_rps']:.4f} vCPU per 1,000 requests/s (agent side; load average {r['loadavg']:.1f})")
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(to_json(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
