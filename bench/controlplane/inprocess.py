"""`python -m bench.controlplane.inprocess`: the control plane's own share of a push, without gRPC.

Builds the benchmark's synthetic mesh, connects N SotW connections to a MeshSource in this process (the
ADS server's connection classes, sending into a list instead of a gRPC stream), subscribes them like
Envoy, then applies VirtualService changes and times the snapshot build and the responses to every proxy.
What this leaves out of a real push (gRPC, the event loop's scheduling, reading the ACKs) is the rest of
the convergence time; `--profile` prints cProfile's top functions for the changes. `--traced` measures the
Python memory the control plane keeps per proxy with tracemalloc (exact where RSS on a shared machine is noisy,
but it sees no C memory: upb messages, gRPC), after the first push and after the changes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pathlib
import pstats
import statistics
import tempfile
import time
import tracemalloc
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from bench.controlplane.clients import CDS, LDS, referenced
from bench.controlplane.mesh import SHARED_SERVICES, make_mesh
from bench.jsonout import to_json
from sailmesh.api.change import Change
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Source
from sailmesh.controlplane.source import MeshSource
from sailmesh.generate.affect import push_request
from sailmesh.platform import workload_file
from sailmesh.registry.workloads import LocalRegistry, workload_key
from sailmesh.server.hashing import HashCache
from sailmesh.server.metrics import XdsMetrics
from sailmesh.server.sotw import SotwConnection
from sailmesh.snapshot.build import build
from sailmesh.store.files import FileStore
from sailmesh.store.layered import LayeredStore
from sailmesh.store.memory import MemoryStore
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


def _traced_mb() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 1e6 if tracemalloc.is_tracing() else 0.0


async def run(services: int, proxies: int, scoping: bool, changes: int, profile: bool,
              kind: str = "routes", traced: bool = False) -> dict[str, Any]:
    if traced:
        tracemalloc.start()
    mesh = make_mesh(tempfile.mkdtemp(prefix="sailmesh-inprocess-"), services, scoping)
    files = FileStore(mesh.config_dir, lambda _r: [])
    await files.start()
    memory = MemoryStore(lambda _r: [])
    store = LayeredStore([files, memory])
    registry = LocalRegistry()
    for w in workload_file.read(mesh.workload_file):
        registry.register(w)
    snapshot = build(None, store, registry, Change.everything())
    source = MeshSource(snapshot)
    metrics, hashes = XdsMetrics(), HashCache()
    sent: list[int] = []

    async def send(response: object) -> None:
        sent.append(len(response) if isinstance(response, bytes) else 0)

    conns = []
    traced_zero = _traced_mb()
    t0 = time.perf_counter()
    for spec in mesh.proxies(proxies):
        node = base_pb2.Node(id=spec.node_id)
        node.metadata.update(spec.metadata)
        conn = SotwConnection(spec.node_id, node, source.proxy_connected(node), source, metrics, hashes)
        got: dict[str, list[Any]] = {}
        for type_url in (CLUSTER, LISTENER, ENDPOINT, ROUTE):  # Envoy's order; EDS/RDS by the names it needs:
            # those its clusters and listeners reference (an uncaptured sidecar's listeners: RDS http_proxy only)
            names = [] if type_url in (CLUSTER, LISTENER) else \
                sorted(referenced(CDS if type_url == ENDPOINT else LDS, got[CLUSTER if type_url == ENDPOINT
                                                                        else LISTENER]))
            await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names), send)
            if type_url in (CLUSTER, LISTENER):
                got[type_url] = list(source.generate(conn.handle, type_url).resources.values())
            st = conn.types[type_url]
            conn.on_ack(st, st.sent_version, st.sent_nonce)
        conns.append(conn)
    first_push = time.perf_counter() - t0
    traced_first = _traced_mb()
    profiler = cProfile.Profile() if profile else None
    samples = []
    for k in range(changes):
        i = k % min(SHARED_SERVICES, services)
        t0, c0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        if kind == "routes":
            resource = resource_from_dict(mesh.virtual_service_doc(i, change=k + 1), Source("bench", 0))
            memory.commit([resource], [])
            change = Change.of(resource.key)
        else:  # a v3 workload of a shared service comes (even changes) and goes (odd ones), as in the benchmark
            w = mesh.workload(i, "v3", 9)
            if k % 2:
                registry.unregister(w.name, w.namespace)
            else:
                registry.register(w)
            change = Change.of(workload_key(w.name, w.namespace))
        previous, snapshot = snapshot, build(snapshot, store, registry, change)
        source.update(snapshot, push_request(change, previous, snapshot))
        t1 = time.perf_counter()
        responses = 0
        type_url = ROUTE if kind == "routes" else ENDPOINT
        for conn in conns:
            st = conn.types[type_url]
            responses += await conn.respond(st, send, force=False, started=None)
            conn.on_ack(st, st.sent_version, st.sent_nonce)  # the proxy ACKs, as Envoy does
        if profiler:
            profiler.disable()
        samples.append({"build_ms": (t1 - t0) * 1e3, "responses_ms": (time.perf_counter() - t1) * 1e3,
                        "cpu_ms": (time.process_time() - c0) * 1e3, "responses": responses})
    traced_end = _traced_mb()
    tracemalloc.stop()
    await files.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        pstats.Stats(profiler).sort_stats("cumtime").print_stats("server|contextlib|budget", 25)
    return {"services": services, "proxies": proxies, "sidecar_scoping": scoping,
            "first_push_s": first_push, "changes": samples,
            "median_build_ms": statistics.median(s["build_ms"] for s in samples),
            "median_responses_ms": statistics.median(s["responses_ms"] for s in samples),
            "median_cpu_ms": statistics.median(s["cpu_ms"] for s in samples),
            **({"traced_mb_per_proxy_first": (traced_first - traced_zero) / proxies,
                "traced_mb_per_proxy_end": (traced_end - traced_zero) / proxies} if traced else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.controlplane.inprocess", description=__doc__)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--proxies", type=int, default=500)
    p.add_argument("--sidecar-scoping", choices=["on", "off"], default="on")
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="cProfile the changes (slows them down)")
    p.add_argument("--kind", choices=["routes", "endpoints"], default="routes",
                   help="VirtualService changes (RDS pushes) or workload changes (EDS pushes, ACKed)")
    p.add_argument("--traced", action="store_true",
                   help="tracemalloc: Python memory kept per proxy (slows everything down; CPU figures not comparable)")
    p.add_argument("--json", help="where to write the result document")
    a = p.parse_args(argv)
    res = asyncio.run(run(a.services, a.proxies, a.sidecar_scoping == "on", a.changes, a.profile, a.kind, a.traced))
    what = "VirtualService change" if a.kind == "routes" else "endpoint change"
    print(f"in-process, {a.services} services / {a.proxies} proxies, Sidecar scoping {a.sidecar_scoping}: "
          f"{what}: snapshot build {res['median_build_ms']:.1f} ms, responses to every proxy "
          f"{res['median_responses_ms']:.1f} ms, CPU {res['median_cpu_ms']:.1f} ms (medians of {a.changes}); "
          f"first push {res['first_push_s']:.2f} s")
    if a.traced:
        print(f"traced Python memory per proxy: {res['traced_mb_per_proxy_first']:.4f} MB after the first push, "
              f"{res['traced_mb_per_proxy_end']:.4f} MB after the changes")
    if a.json:
        pathlib.Path(a.json).write_text(to_json(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
