"""What building typed config models costs for the control-plane benchmark's mesh (5,000 services by default).

Run from the repository root: `python -m bench.model_build [--services 5000] [--rounds 5]`. It builds the
Resources of `bench.controlplane.mesh` (a Service, a VirtualService and a DestinationRule per service, and the
mesh-wide Sidecar) and times, per round, each way of turning their specs into typed models, next to what the
control plane already spends on the same resources (validation) for scale. It measures whichever model layer
is checked out: frozen dataclasses (`typed()`, up to commit "bench: model_build measures ...", which also has the
bench-only msgspec Structs it was compared with) or the msgspec Structs adopted after (`build_model()`).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.controlplane.mesh import SyntheticMesh
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource


def mesh_resources(services: int) -> list[Resource]:
    """The benchmark mesh's config as Resources (what the file store holds after reading the YAML)."""
    mesh = SyntheticMesh(services, True, "", "")
    docs: list[dict] = []
    for i in range(services):
        docs += [mesh.service_doc(i), mesh.virtual_service_doc(i), mesh.destination_rule_doc(i)]
    docs.append(mesh.sidecar_doc())
    return [resource_from_dict(d) for d in docs]


def _time(fn: Callable[[], Any], rounds: int) -> tuple[list[float], int]:
    """Wall seconds of each round, and the bytes the last round's result keeps alive."""
    times = []
    result = None
    for _ in range(rounds):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    del result
    gc.collect()
    tracemalloc.start()
    kept = fn()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return times, size


def _candidates(resources: list[Resource]) -> dict[str, Callable[[], Any]]:
    from sailmesh.api import models, validate

    out: dict[str, Callable[[], Any]] = {}
    if hasattr(models, "typed"):  # the frozen-dataclass layer (before this benchmark's decision)
        known = [r for r in resources if r.kind in models.MODELS]
        out["api.models typed(): frozen dataclasses"] = lambda: [models.typed(r) for r in known]
    if hasattr(models, "build_model"):  # the msgspec layer adopted after it
        out["api.models build_model(): msgspec Structs"] = lambda: [models.build_model(r) for r in resources]
    out["for scale: api.validate.validate()"] = lambda: [validate.validate(r) for r in resources]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    resources = mesh_resources(args.services)
    kinds: dict[str, int] = {}
    for r in resources:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    print(f"{args.services} services: {len(resources)} resources {kinds}; Python {sys.version.split()[0]};"
          f" {args.rounds} rounds", flush=True)
    print(f"{'candidate':<52} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'us/res':>7} {'kept MB':>8}")
    for name, fn in _candidates(resources).items():
        rounds = 1 if name.startswith("for scale") else args.rounds
        times, size = _time(fn, rounds)
        med = statistics.median(times)
        print(f"{name:<52} {med * 1e3:>10.1f} {min(times) * 1e3:>8.1f} {max(times) * 1e3:>8.1f}"
              f" {med * 1e6 / len(resources):>7.1f} {size / 1e6:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
