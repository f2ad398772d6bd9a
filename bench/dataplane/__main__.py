"""`python -m bench.dataplane`: the data-plane benchmark (Istio's method scaled to 2 cores)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.dataplane import report
from bench.dataplane.errors import BenchError
from bench.dataplane.mesh import load_provider, mesh_pair_factory
from bench.dataplane.runner import MODES, RunConfig, run
from bench.jsonout import to_json

DEFAULT_JSON = Path(__file__).resolve().parent.parent / "results" / "dataplane.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; unset ones take the mode's defaults."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10 s x 2 rounds (noisy; for a first look)")
    mode.add_argument("--smoke", action="store_true", help="a few seconds: every set-up starts, numbers parse")
    p.add_argument("--duration", type=float, help="seconds of fixed-rate load per set-up per round (full: 60)")
    p.add_argument("--rate", type=float, help="fixed rate, total requests/s (full: 1000)")
    p.add_argument("--connections", type=int, default=16, help="client connections (default 16)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (full: 3)")
    p.add_argument("--saturation", type=float, help="seconds of wrk saturation per set-up per round (full: 10)")
    p.add_argument("--warmup", type=float, help="seconds of unmeasured load before each measurement (full: 5)")
    p.add_argument("--envoy-concurrency", type=int, default=1, help="worker threads per Envoy (default 1)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--loadgen", choices=("auto", "python"), default="auto",
                   help="auto: hey + wrk (python fallback only in --smoke when missing); python: force the fallback")
    p.add_argument("--fixed-tool", choices=("wrk", "hey"), default="wrk",
                   help="fixed-rate generator: wrk paced by a Lua script (default) or hey -q (bursty, 0.1 ms)")
    p.add_argument("--mesh-factory", metavar="MODULE:FUNCTION",
                   help="plug set-ups (3)/(4): FUNCTION(features) -> PairFactory | None")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace, command: str) -> RunConfig:
    """Mode defaults overridden by explicit flags."""
    mode = "smoke" if a.smoke else "quick" if a.quick else "full"
    d = MODES[mode]
    return RunConfig(
        mode=mode,
        duration=a.duration if a.duration is not None else d["duration"],
        rate=a.rate if a.rate is not None else d["rate"],
        connections=a.connections,
        rounds=a.rounds if a.rounds is not None else int(d["rounds"]),
        saturation_s=a.saturation if a.saturation is not None else d["saturation_s"],
        warmup_s=a.warmup if a.warmup is not None else d["warmup_s"],
        envoy_concurrency=a.envoy_concurrency,
        wrk_threads=a.wrk_threads,
        loadgen=a.loadgen,
        fixed_tool=a.fixed_tool,
        mesh_provider=load_provider(a.mesh_factory) if a.mesh_factory else mesh_pair_factory,
        command=command,
        log=lambda s: print(f"... {s}", file=sys.stderr, flush=True),
    )


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; exit 1 only when the benchmark itself fails."""
    args = parse_args(argv)
    command = "python -m bench.dataplane " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config_from_args(args, command.strip())
        doc = run(cfg)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.render(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(to_json(doc) + "\n")
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
