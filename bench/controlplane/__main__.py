"""`python -m bench.controlplane`: push/convergence times, CPU and memory of the control plane under load."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from bench.controlplane.errors import BenchError
from bench.controlplane.report import render
from bench.controlplane.runner import CaseConfig, log, run_case
from bench.jsonout import to_json

DEFAULT_JSON = Path(__file__).resolve().parent.parent / "results" / "controlplane.json"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.controlplane", description=__doc__)
    p.add_argument("--services", type=_ints, default=None, help="comma-separated mesh sizes (default 100,1000,5000)")
    p.add_argument("--proxies", type=_ints, default=None,
                   help="comma-separated proxy counts (default 50,500,2000); paired with --services in order "
                        "unless --grid")
    p.add_argument("--grid", action="store_true", help="every services x proxies combination instead of pairs")
    p.add_argument("--sidecar-scoping", choices=("both", "on", "off"), default="both")
    p.add_argument("--changes", type=int, default=None, help="changes of each kind per case (default 50)")
    p.add_argument("--real-envoys", type=int, default=None, help="real Envoys among the proxies (default 3)")
    p.add_argument("--quick", action="store_true", help="100/50 and 1000/500, 20 changes")
    p.add_argument("--smoke", action="store_true", help="20 services, 5 proxies (1 a real Envoy), 3 changes: < 30 s")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the result document")
    p.add_argument("--profile", default="", metavar="DIR",
                   help="record py-spy stacks of the control plane per case into DIR (summary in the JSON)")
    p.add_argument("--trace", action="store_true",
                   help="run the control plane under bench.controlplane.trace: each push's stages (debounce, build, "
                        "fan-out, writes, ACKs), GC pauses and FileStore re-applies, in ms from the change")
    p.add_argument("--sync-timeout", type=float, default=600.0, help="seconds allowed for the first full push")
    p.add_argument("--connect-batch", type=int, default=0, metavar="N",
                   help="first push: connect the simulated proxies N at a time, each batch after the last synced "
                        "(default 0: all at once; the 5,000 / 2,000 case without Sidecar scoping needs it here)")
    p.add_argument("--control-plane-from", default="", metavar="DIR",
                   help="run the control plane of another checkout (e.g. `git archive main | tar -x -C DIR`) under "
                        "this harness: the fair A/B on a shared machine is alternating runs with and without it")
    p.add_argument("--csr", action="store_true", help="only measure CSRs signed per second per core")
    p.add_argument("--no-csr", action="store_true", help="skip the CSR measurement (run with every mode otherwise)")
    p.add_argument("--keep-dir", default="", help="keep each case's files and logs under this directory")
    return p.parse_args(argv)


def cases_from_args(a: argparse.Namespace) -> list[CaseConfig]:
    if a.smoke:
        services, proxies, changes, envoys = [20], [5], 3, 1
        scoping = a.sidecar_scoping if a.sidecar_scoping != "both" else "on"
    else:
        services = a.services or ([100, 1000] if a.quick else [100, 1000, 5000])
        proxies = a.proxies or ([50, 500] if a.quick else [50, 500, 2000])
        changes = a.changes if a.changes is not None else (20 if a.quick else 50)
        envoys = a.real_envoys if a.real_envoys is not None else 3
        scoping = a.sidecar_scoping
    if a.grid:
        pairs = [(s, p) for s in services for p in proxies]
    else:
        if len(services) != len(proxies) and 1 not in (len(services), len(proxies)):
            raise SystemExit("--services and --proxies must have the same length (or one value), or use --grid")
        n = max(len(services), len(proxies))
        pairs = [(services[min(i, len(services) - 1)], proxies[min(i, len(proxies) - 1)]) for i in range(n)]
    modes = {"both": [False, True], "on": [True], "off": [False]}[scoping]
    return [CaseConfig(s, p, m, changes, envoys, sync_timeout=a.sync_timeout, profile_dir=a.profile, trace=a.trace,
                       connect_batch=a.connect_batch,
                       control_plane_root=os.path.abspath(a.control_plane_from) if a.control_plane_from else "")
            for s, p in pairs for m in modes]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from bench.dataplane.runner import machine_info

    machine = machine_info()
    mode = "smoke" if a.smoke else "quick" if a.quick else "full"
    doc = {"meta": {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "command": "python -m bench.controlplane " + shlex.join(sys.argv[1:] if argv is None else argv),
                    "machine": machine,
                    "notes": [*([f"control plane from {a.control_plane_from}"] if a.control_plane_from else []),
                              "control plane: `python -m sailmesh controlplane` subprocess (CPU and RSS from /proc)",
                              "lean ADS clients (SotW, ACK at once, follow EDS/RDS) in worker processes of up to "
                              "250 each, sharing the 2 cores with the control plane"]},
           "cases": []}
    if not a.no_csr:
        from bench.controlplane import csr

        size = "smoke" if a.smoke else "quick" if a.quick else "full"
        sizes = {"smoke": (100, 10, 100), "quick": (300, 30, 500), "full": (1000, 100, 2000)}
        count, rsa_count, grpc_count = sizes[size]
        doc["csr"] = csr.run(count=count, rsa_count=rsa_count, grpc_count=grpc_count, profile_dir=a.profile)
        print(csr.render(doc["csr"]), flush=True)
    for cfg in ([] if a.csr else cases_from_args(a)):
        keep = os.path.join(a.keep_dir, f"{cfg.services}-{cfg.proxies}-{'on' if cfg.sidecar_scoping else 'off'}") \
            if a.keep_dir else ""
        try:
            doc["cases"].append(asyncio.run(run_case(cfg, keep)))
        except asyncio.CancelledError:
            log("interrupted: the case's processes were stopped")
            return 130
        except BenchError as e:
            log(f"case failed: {e}")
            doc["cases"].append({"services": cfg.services, "proxies": cfg.proxies,
                                 "sidecar_scoping": cfg.sidecar_scoping, "error": str(e)})
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = render(doc)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(to_json(doc))
    return 1 if any("error" in c for c in doc["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
