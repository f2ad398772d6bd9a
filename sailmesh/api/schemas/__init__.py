"""Istio's CRD OpenAPI schemas (descriptions stripped), derived from Istio's crd-all.gen.yaml (Apache-2.0)."""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

SCHEMA_FILE = pathlib.Path(__file__).with_name("crds.json")


@functools.cache
def all_schemas() -> dict[str, Any]:
    """{"group/Kind": {"scope": ..., "versions": {version: index}, "schemas": [openAPIV3Schema, ...]}}."""
    with open(SCHEMA_FILE, encoding="utf-8") as fh:
        schemas: dict[str, Any] = json.load(fh)
    return schemas


def schema_for(group: str, kind: str, version: str) -> dict[str, Any] | None:
    """The openAPIV3Schema of one served version of an Istio kind, or None when unknown."""
    entry = all_schemas().get(f"{group}/{kind}")
    if entry is None or version not in entry["versions"]:
        return None
    schema: dict[str, Any] = entry["schemas"][entry["versions"][version]]
    return schema
