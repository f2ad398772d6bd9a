"""What a server-side dry run of `apply` would change in a resource already in force: a unified diff of its YAML."""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from sailmesh.api.resource import Resource

INDENT = "    "


def _shown(r: Resource) -> list[str]:
    """The parts of a resource an apply changes (labels, annotations, spec) as YAML lines."""
    meta = (r.raw or {}).get("metadata") or {}
    doc: dict[str, Any] = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
    doc = {"metadata": doc} if doc else {}
    doc["spec"] = (r.raw or {}).get("spec", r.spec)
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).splitlines()


def changes(in_force: Resource | None, applied: Resource) -> str:
    """The lines (each indented, one per line, after a newline) that would change, "" when none or nothing is in
    force (a created resource is all new)."""
    if in_force is None:
        return ""
    diff = list(difflib.unified_diff(_shown(in_force), _shown(applied), "in force", "after apply", n=1, lineterm=""))
    return "".join("\n" + INDENT + line for line in diff)
