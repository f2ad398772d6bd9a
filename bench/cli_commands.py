"""Time the operating commands against a running mesh: wall, CPU and run-queue wait of each run (issue 11).

    sailmesh demo --proxy-concurrency 1 &          # Bookinfo, then:
    python -m bench.cli_commands --runs 3          # a markdown table, one row per command (docs/troubleshooting.md)
    python -m bench.cli_commands --only apply      # the commands whose label contains "apply"
    python -m bench.cli_commands --against DIR     # the sailmesh of `git archive REV sailmesh | tar -x -C DIR`
    python -m bench.cli_commands --against DIR --ab  # DIR's and this tree's runs alternating: two rows each
    python -m bench.cli_commands --importtime      # the first column: the run's imports (python -X importtime)

Each run is a fresh interpreter running `sailmesh ARGS` in process; at exit it reports its CPU (user+sys) and the
seconds its main thread was runnable but not running (/proc/self/schedstat), so a wall time on a loaded machine
can be told apart from a wait inside the command. One unrecorded run precedes the recorded ones.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

# label -> the command (`sailmesh` is this interpreter's); P = productpage-v1-0, BI = the bundled Bookinfo sample
BI = "sailmesh/samples/bookinfo"
P = "productpage-v1-0"
COMMANDS: list[tuple[str, str]] = [
    ("--help", "--help"),
    ("analyze", "analyze"),
    ("analyze -f BI/networking", f"analyze -f {BI}/networking"),
    ("analyze -f BI/networking --use-live=false", f"analyze -f {BI}/networking --use-live=false"),
    ("explain --from P GET http://reviews:9080/reviews/0 -H end-user:jason",
     f"explain --from {P} GET http://reviews:9080/reviews/0 -H end-user:jason"),
    ("x authz check reviews-v1-0", "x authz check reviews-v1-0"),
    ("x describe service reviews", "x describe service reviews"),
    ("x flags UO", "x flags UO"),
    ("proxy-status", "proxy-status"),
    ("proxy-status P (diff against Envoy)", f"proxy-status {P}"),
    *((f"proxy-config {s} P", f"proxy-config {s} {P}") for s in ("cluster", "listener", "route", "endpoint", "secret")),
    ("get vs -o wide", "get vs -o wide"),
    ("get ns", "get ns"),
    ("describe ns default", "describe ns default"),
    ("get pod P -o json", f"get pod {P} -o json"),
    ("apply -f BI/networking/destination-rule-all.yaml --dry-run=server",
     f"apply -f {BI}/networking/destination-rule-all.yaml --dry-run=server"),
    ("apply -f BI/tasks/virtual-service-all-v1.yaml (1st creates, then unchanged)",
     f"apply -f {BI}/tasks/virtual-service-all-v1.yaml"),
    ("delete vs reviews --dry-run=server", "delete vs reviews --dry-run=server"),
    ("version", "version"),
    ("verify-install", "verify-install"),
    ("bug-report -o R.tar.gz", "bug-report -o /tmp/sailmesh-bench-bug-report.tar.gz"),
]

# run in the child: `sailmesh ARGS`, then its CPU and run-queue wait on stderr
CHILD = """
import atexit, os, runpy, sys
if os.environ.get("SAILMESH_BENCH_AGAINST"):  # before the current directory ('' on sys.path for -c)
    sys.path.insert(0, os.environ["SAILMESH_BENCH_AGAINST"])
def report():
    t = os.times()
    wait = int(open("/proc/self/schedstat").read().split()[1])
    os.write(2, f"SCHED {t.user + t.system:.3f} {wait / 1e9:.3f}\\n".encode())
atexit.register(report)
sys.argv = ["sailmesh", *sys.argv[1:]]
runpy.run_module("sailmesh", run_name="__main__", alter_sys=True)
"""


def run_once(args: list[str], against: str = "", importtime: bool = False) -> tuple[float, float, float, str, int]:
    """(wall s, CPU s, run-queue wait s, 1-min load before, exit code) of one run (of `against`'s sailmesh); with
    `importtime`, the wall s and CPU s are the run's imports (`python -X importtime`: the top-level imports'
    cumulative time, wall) and its CPU, and the wait column is 0."""
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[0]
    start = time.perf_counter()
    env = {**os.environ, "SAILMESH_BENCH_AGAINST": against}
    flags = ["-X", "importtime"] if importtime else []
    p = subprocess.run([sys.executable, *flags, "-c", CHILD, *args], capture_output=True, text=True, check=False,
                       env=env)
    wall = time.perf_counter() - start
    sched = [line.split() for line in p.stderr.splitlines() if line.startswith("SCHED ")]
    cpu, wait = (float(sched[-1][1]), float(sched[-1][2])) if sched else (float("nan"), float("nan"))
    if importtime:  # "import time: SELF | CUMULATIVE | NAME", a top-level import's NAME not indented
        rows = [line.split("|") for line in p.stderr.splitlines() if line.startswith("import time:")]
        top = sum(int(r[1]) for r in rows if len(r) == 3 and r[1].strip().isdigit() and not r[2].startswith("  "))
        return top / 1e6, cpu, 0.0, load, p.returncode
    return wall, cpu, wait, load, p.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="only the commands whose label contains this")
    parser.add_argument("--against", default="", help="run this directory's sailmesh package (an A/B's before)")
    parser.add_argument("--ab", action="store_true",
                        help="with --against: its runs and this tree's alternate (before, after, before, ...), a row "
                             "for each, so both meet the same load")
    parser.add_argument("--importtime", action="store_true",
                        help="each run under `python -X importtime`: the wall column is its imports' time")
    opts = parser.parse_args(argv)
    trees = [("before", opts.against), ("after", "")] if opts.ab and opts.against else [("", opts.against)]
    first = "imports s (-X importtime, wall)" if opts.importtime else "wall s"
    print(f"| command | {first} | CPU s (user+sys) | run-queue wait s | load (1 min) | exit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, command in COMMANDS:
        if opts.only not in label:
            continue
        runs: dict[str, list[tuple[float, float, float, str, int]]] = {name: [] for name, _ in trees}
        for i in range(opts.runs + 1):  # the first round unrecorded
            for name, tree in trees:
                got = run_once(shlex.split(command), tree, opts.importtime)
                if i:
                    runs[name].append(got)
        for name, got in runs.items():
            cells = [" ".join(f"{r[i]:.2f}" for r in got) for i in range(3)]
            print(f"| `{label}`{' ' + name if name else ''} | {' | '.join(cells)} | {' '.join(r[3] for r in got)} | "
                  f"{' '.join(str(r[4]) for r in got)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
