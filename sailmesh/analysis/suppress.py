"""Message suppression as istioctl does it: `-S CODE=Kind name[.namespace]` rules and the
`galley.istio.io/analyze-suppress` annotation (comma-separated codes) on the resource itself."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.errors import ConfigError

SUPPRESS_ANNOTATION = "galley.istio.io/analyze-suppress"


@dataclass(frozen=True)
class Suppression:
    """One `-S` rule: a code (or `*`) and a resource glob (`Pod *.frod`, `Namespace frod`)."""

    code: str
    resource: str

    def matches(self, d: Diagnostic) -> bool:
        if self.code != "*" and self.code != d.code:
            return False
        r = d.resource
        if r is None:
            return fnmatch.fnmatchcase(d.origin, self.resource)
        forms = [f"{r.kind} {r.name}.{r.namespace}" if r.namespace else f"{r.kind} {r.name}", d.origin]
        return any(fnmatch.fnmatchcase(f, self.resource) for f in forms)


def parse_suppressions(rules: Iterable[str]) -> list[Suppression]:
    """Parse `CODE=Kind name` rules; a malformed rule is a ConfigError."""
    out = []
    for rule in rules:
        code, sep, resource = rule.partition("=")
        if not sep or not code.strip() or not resource.strip():
            raise ConfigError(f"invalid suppression {rule!r}: expected CODE=Kind name, e.g. 'IST0102=Namespace frod'")
        out.append(Suppression(code.strip(), resource.strip()))
    return out


def suppressed_by_annotation(d: Diagnostic) -> bool:
    """The resource carries galley.istio.io/analyze-suppress listing this code (or `*`)."""
    if d.resource is None:
        return False
    codes = {c.strip() for c in d.resource.annotations.get(SUPPRESS_ANNOTATION, "").split(",") if c.strip()}
    return d.code in codes or "*" in codes


def apply_suppressions(diags: list[Diagnostic], rules: list[Suppression]) -> list[Diagnostic]:
    """Drop messages suppressed by a rule or by their resource's annotation."""
    return [d for d in diags if not suppressed_by_annotation(d) and not any(s.matches(d) for s in rules)]
