"""Where the sailmesh sidecar pair plugs into the benchmark: set-ups (3) and (4).

The lead wires the real mesh here: `mesh_pair_factory("default")` must return a `PairFactory` that,
given the backend, starts two sailmesh sidecars (client side and server side, with whatever control
plane they need) using the mesh's default transport, and returns a `SetupHandle` whose url/host_header
reach the backend through both sidecars and whose envoy_pids are the two sidecar Envoys.
`mesh_pair_factory("demo")` is the same with the demo's features on (Istio standard metrics, retries).
Until then both return None and the harness prints "not available yet".

A factory can also be plugged from outside with `--mesh-factory module:function`, where
function(features) -> PairFactory | None.

A sketch for the embedded mode (docs/architecture.md): write a Service `bench-backend` (port 8080)
and two LocalWorkloads with `sidecar: true` into a temp dir: the server, whose app is
`python -m bench.backend --host $HOST --port $PORT` (the mesh starts its own copy of the backend; the
harness's Backend then idles, which is fine: only the Envoys' PIDs are measured), and a client whose
app just sleeps. Start the control plane and both, wait until the client sidecar routes
`bench-backend:8080`, and return url=`http://<client pod IP>:15001/`, host_header=`bench-backend:8080`,
envoy_pids={"client-sidecar": ..., "server-sidecar": ...}, transport=... and a cleanup that stops all.
For "demo", add what the demo turns on (Istio standard metrics; a VirtualService with retries).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Literal

from bench.dataplane.errors import BenchError
from bench.dataplane.setups import PairFactory

Features = Literal["default", "demo"]
FactoryProvider = Callable[[Features], "PairFactory | None"]

DEFAULT_TRANSPORT_NOTE = "plaintext: mTLS not implemented yet"


def mesh_pair_factory(features: Features) -> PairFactory | None:
    """The sailmesh sidecar pair for `features`; None while the mesh is not wired in yet."""
    return None


def load_provider(spec: str) -> FactoryProvider:
    """Import `module:function` given on the command line."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise BenchError(f"--mesh-factory wants module:function, got {spec!r}")
    fn = getattr(importlib.import_module(mod_name), attr, None)
    if not callable(fn):
        raise BenchError(f"{spec} is not a callable")
    return fn  # type: ignore[no-any-return]
