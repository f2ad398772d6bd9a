"""Runs Istio's analyzer test cases (EXPECTED.tsv, scope istio+core) against sailmesh's analyzers."""

from __future__ import annotations

import csv
import os
import pathlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

import yaml

from sailmesh.analysis.registry import analyze, by_name
from sailmesh.api.parse import load_paths

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def conformance_dir() -> pathlib.Path | None:
    """../shared/conformance, or $SAILMESH_CONFORMANCE; None when absent."""
    for cand in (os.environ.get("SAILMESH_CONFORMANCE"), str(ROOT.parent / "shared" / "conformance")):
        if cand and pathlib.Path(cand, "analyzers", "EXPECTED.tsv").is_file():
            return pathlib.Path(cand)
    return None


# Istio's analyzer test name -> sailmesh analyzer name (identical except the schema validation wrapper).
def analyzer_name(istio: str) -> str:
    m = re.match(r"schemaValidation\.CollectionValidationAnalyzer\(collections\.(\w+)\)", istio)
    if m:
        return f"schemaValidation.{m.group(1)}"
    return istio.strip("&{}")


@dataclass
class Case:
    name: str
    analyzer: str
    files: list[str]
    mesh_config: str
    mesh_networks: str
    expected: set[tuple[str, str]] = field(default_factory=set)
    got: set[tuple[str, str]] = field(default_factory=set)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason and self.expected == self.got


def _norm(resource: str) -> str:
    """`Kind name` (written without namespace) means `Kind default/name` for namespaced kinds."""
    kind, _, name = resource.partition(" ")
    if "/" not in name and kind not in ("Namespace", "MeshNetworks") and name:
        name = f"default/{name}"
    return f"{kind} {name}"


def load_cases(base: pathlib.Path, core_only: bool = True) -> list[Case]:
    """Cases of EXPECTED.tsv: scope istio+core only (the target), or every scope."""
    cases: dict[str, Case] = {}
    with open(base / "analyzers" / "EXPECTED.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if core_only and row["scope"] != "istio+core":
                continue
            c = cases.setdefault(
                row["case"],
                Case(row["case"], analyzer_name(row["analyzer"]), row["file"].split(","), row["meshConfig"],
                     row["meshNetworks"]),
            )
            if row["code"] != "NONE":
                c.expected.add((row["code"], _norm(row["resource"])))
    return list(cases.values())


def _yaml(path: pathlib.Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}


def run_case(base: pathlib.Path, case: Case) -> Case:
    td = base / "analyzers" / "testdata"
    analyzer = by_name(case.analyzer)
    if analyzer is None:
        case.reason = f"analyzer {case.analyzer} not implemented"
        return case
    # Each file is loaded on its own: in Istio's multi-cluster cases every file is one cluster, so the same
    # Service in two files is two definitions, not a duplicate.
    resources = [r for f in case.files for r in load_paths([str(td / f)]).resources]
    mesh = _yaml(td / case.mesh_config) if case.mesh_config else {}
    networks = _yaml(td / case.mesh_networks) if case.mesh_networks else {}
    diags = analyze(resources, mesh, [analyzer], networks)
    case.got = {(d.code, d.origin) for d in diags}
    return case


def run_all(base: pathlib.Path, core_only: bool = True) -> list[Case]:
    return [run_case(base, c) for c in load_cases(base, core_only)]


def summary(cases: list[Case]) -> str:
    lines = []
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in cases:
        per[c.analyzer][0] += c.ok
        per[c.analyzer][1] += 1
    ok = sum(c.ok for c in cases)
    lines.append(f"matched {ok}/{len(cases)} cases ({100 * ok / max(1, len(cases)):.1f}%)")
    for c in cases:
        if not c.ok:
            why = c.reason or (
                f"missing {sorted(c.expected - c.got)} extra {sorted(c.got - c.expected)}"
            )
            lines.append(f"  FAIL {c.name} [{c.analyzer}]: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    b = conformance_dir()
    assert b, "conformance data not found"
    print(summary(run_all(b)))
    print("all scopes (Ingress, webhooks, Gateway API, CRDs included):")
    print(summary(run_all(b, core_only=False)))
