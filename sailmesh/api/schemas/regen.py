"""Regenerate crds.json from Istio's crd-all.gen.yaml: `python -m sailmesh.api.schemas.regen CRD_YAML`."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from sailmesh.api.schemas import SCHEMA_FILE


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items() if k != "description"}
        if str(node.get("description", "")).startswith("Deprecated"):
            out["x-sailmesh-deprecated"] = node["description"]
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def compact(crd_text: str) -> dict[str, Any]:
    """The compact form of every CRD in the text: served versions with their (deduplicated) schemas."""
    out: dict[str, Any] = {}
    for doc in yaml.load_all(crd_text, Loader=yaml.CSafeLoader):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        entry: dict[str, Any] = {"scope": spec["scope"], "versions": {}, "schemas": []}
        for v in spec["versions"]:
            if not v.get("served"):
                continue
            schema = _strip(v["schema"]["openAPIV3Schema"])
            if schema not in entry["schemas"]:
                entry["schemas"].append(schema)
            entry["versions"][v["name"]] = entry["schemas"].index(schema)
        out[f"{spec['group']}/{spec['names']['kind']}"] = entry
    return out


def render(crd_text: str) -> str:
    """The crds.json text for a CRD file (stable key order, one line per kind)."""
    data = compact(crd_text)
    lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'))}"
             for k, v in sorted(data.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        text = render(fh.read())
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
