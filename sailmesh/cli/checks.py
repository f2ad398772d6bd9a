"""A list of named checks with a verdict and, when one fails, the fix: what verify-install and precheck print."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def report(checks: list[Check], title: str) -> int:
    """Print every check (OK / FAIL, detail, fix); exit status 1 when any failed."""
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        print(f"{'OK  ' if c.ok else 'FAIL'}  {c.name.ljust(width)}  {c.detail}")
        if not c.ok and c.fix:
            print(f"      {' ' * width}  fix: {c.fix}")
    failed = [c for c in checks if not c.ok]
    print(f"\n{title}: " + (f"{len(failed)} of {len(checks)} checks failed" if failed else
                            f"all {len(checks)} checks passed"))
    return 1 if failed else 0
