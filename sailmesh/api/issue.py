"""One validation problem: where (file, line, resource, field path) and what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sailmesh.api.resource import Resource


@dataclass(frozen=True)
class Issue:
    """A problem found in a resource; prints as `file:line: Kind ns/name: field.path: message`."""

    file: str
    line: int
    resource: str  # "VirtualService default/reviews"
    field: str  # "spec.http[0].route[1].weight" ("" for the whole resource)
    message: str
    severity: str = "error"  # "error" rejects the resource; "warning" is printed only

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        who = f"{self.resource}: " if self.resource else ""
        what = f"{self.field}: " if self.field else ""
        return f"{where}{who}{what}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "resource": self.resource, "field": self.field,
                "message": self.message, "severity": self.severity}


class IssueSink:
    """Collects issues for one resource, resolving each field path to its source line."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.issues: list[Issue] = []

    def add(self, path: str, message: str, severity: str = "error") -> None:
        src = self.resource.source
        self.issues.append(Issue(src.file, src.line_of(path) if path else src.line, str(self.resource.key),
                                 path, message, severity))

    def warn(self, path: str, message: str) -> None:
        self.add(path, message, "warning")
