"""`python -m bench.fuzz [--examples N] [--targets validate,documents,http,xds] [--seed S] [--json PATH]`.

Runs each fuzz target with N examples (random seed unless --seed; the suite runs 25, derandomized) and prints the
crash-free run count per target; exits 1 with hypothesis's minimal failing example on the first failure.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bench.fuzz import strategies as fuzz
from bench.fuzz.targets import Harness, check_document, check_validate_text

TARGETS = ("validate", "documents", "http", "xds")


def _run(name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int,
         seed_value: int) -> dict[str, Any]:
    count = 0

    def counted(value: Any) -> None:
        nonlocal count
        count += 1
        check(value)

    test = seed(seed_value)(settings(max_examples=examples, deadline=None, database=None,
                                     suppress_health_check=list(HealthCheck))(given(strategy)(counted)))
    began = time.monotonic()
    print(f"{name}: {examples} examples, seed {seed_value} ...", file=sys.stderr, flush=True)
    test()
    return {"target": name, "examples": count, "seed": seed_value, "seconds": round(time.monotonic() - began, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000, help="examples per target (default 2000)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    p.add_argument("--json", default="", help="also write the results as JSON here")
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    seed_value = args.seed if args.seed is not None else random.randrange(2**32)
    results = []
    harness = Harness() if {"http", "xds"} & set(targets) else None
    try:
        for t in targets:
            if t == "validate":
                r = _run(t, fuzz.config_texts, check_validate_text, args.examples, seed_value)
            elif t == "documents":
                r = _run(t, fuzz.documents, check_document, args.examples, seed_value)
            elif t == "http":
                assert harness is not None
                r = _run(t, fuzz.api_requests(), harness.check_http, args.examples, seed_value)
                r["statuses"] = {str(k): v for k, v in sorted(harness.statuses.items())}
            else:
                assert harness is not None
                r = _run(t, fuzz.xds_scripts(), harness.check_xds, args.examples, seed_value)
                r["endings"] = dict(sorted(harness.endings.items()))
            results.append(r)
            print(f"{t}: {r['examples']} examples crash-free in {r['seconds']} s "
                  + (json.dumps(r.get("statuses") or r.get("endings") or {})), flush=True)
    finally:
        if harness is not None:
            harness.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
