"""One analysis finding (message type + arguments + resource) and Go-fmt style rendering."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sailmesh.analysis.messages import MessageType
from sailmesh.api.resource import Resource

LEVELS = {"Info": 0, "Warning": 1, "Error": 2}
_VERB = re.compile(r"%[-+# 0]*\d*(?:\.\d+)?([svqdT%])")


def _go_v(value: Any) -> str:
    """Go's %v: lists print as [a b], maps as map[k:v], bools lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go_v(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{_go_v(k)}:{_go_v(v)}" for k, v in sorted(value.items())) + "]"
    if value is None:
        return "<nil>"
    return str(value)


def _go_q(value: Any) -> str:
    """Go's %q: a double-quoted string with Go escapes (lists quote each element)."""
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go_q(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def go_format(template: str, args: tuple[Any, ...]) -> str:
    """Render a Go fmt template with %s/%v/%q/%d semantics (missing args print %!v(MISSING), as Go)."""
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        try:
            val = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb == "q":
            return _go_q(val)
        if verb == "d" and isinstance(val, (int, float)) and not isinstance(val, bool):
            return str(int(val))
        return _go_v(val)

    return _VERB.sub(sub, template)


@dataclass(frozen=True)
class Diagnostic:
    """A message about one resource, with an optional field path for the line number."""

    type: MessageType
    args: tuple[Any, ...]
    resource: Resource | None = None
    path: str = ""
    origin_override: str = field(default="", compare=False)

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def level(self) -> str:
        return self.type.level

    @property
    def message(self) -> str:
        return go_format(self.type.template, self.args)

    @property
    def origin(self) -> str:
        """`Kind ns/name` as istioctl prints it (cluster-scoped kinds without namespace)."""
        if self.origin_override:
            return self.origin_override
        return str(self.resource.key) if self.resource else ""

    @property
    def location(self) -> str:
        """`file:line` when the resource came from a file, else empty."""
        r = self.resource
        if r is None or not r.source.file:
            return ""
        line = r.source.line_of(self.path) if self.path else r.source.line
        return f"{r.source.file}:{line}" if line else r.source.file

    def render(self) -> str:
        """istioctl's text form: `Error [IST0101] (VirtualService default/x file.yaml:14) message`."""
        where = self.origin
        if self.location:
            where = f"{where} {self.location}"
        return f"{self.level} [{self.code}] ({where}) {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """istioctl's JSON/YAML form."""
        return {
            "code": self.code,
            "documentationUrl": self.type.documentation_url,
            "level": self.level,
            "message": self.message,
            "origin": self.origin,
        }


def at_least(level: str, threshold: str) -> bool:
    """Whether `level` is at or above `threshold` (Info < Warning < Error)."""
    return LEVELS.get(level, 0) >= LEVELS.get(threshold, 2)
