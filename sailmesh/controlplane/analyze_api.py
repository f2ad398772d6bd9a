"""`POST /api/v1/analyze`: `sailmesh analyze` answered by the control plane, against its current live mesh.

The CLI reads its `-f` files and sends their text; the control plane parses them here (so parse and validation
errors still name the file and line, and messages the file's line), puts them in place of the live resources of
the same name, runs the analyzers and returns every message (all levels, after `-S` suppressions) with the
resource's namespace, plus the "accepted, not enforced" notes. The CLI then filters by namespace and threshold
and prints, without loading the analyzers, YAML or Envoy's protos (they cost 0.5-0.9 CPU s per command).
The answer to the same question about the same live mesh is remembered: asking again costs a lookup.

Request:  {"files": [{"name": PATH, "text": TEXT}], "meshConfig": YAML text or null, "suppress": ["CODE=RES"],
           "useLive": true}; `"useLive": false` (`analyze -f F --use-live=false`): the files alone, without the
           live config and without this control plane's mesh config (Istio's defaults unless meshConfig is sent),
           the same answer the CLI computes itself when no mesh runs.
Answer:   {"messages": [{code, documentationUrl, level, message, origin, reference, namespace, text}],
           "notes": [{"namespace", "text"}], "errors": [parse/validation errors]}; 400 {"errors", "field"} for a
           request the CLI should have refused (`field` names it: suppress, meshConfig, files).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import yaml

from sailmesh.analysis.registry import analyze
from sailmesh.analysis.suppress import apply_suppressions, parse_suppressions
from sailmesh.api.parse import load_texts
from sailmesh.controlplane.live import resources as live_resources
from sailmesh.errors import ConfigError
from sailmesh.generate.enforcement import not_enforced

T = TypeVar("T")


def _refused(field: str, message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"errors": [message], "field": field}


def _files(body: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    files = body.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                              and isinstance(f.get("text"), str) for f in files):
        return None
    return [(f["name"], f["text"]) for f in files]


def answer(body: Any, live_docs: list[dict[str, Any]], mesh_config: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The analysis of the request's files together with (or, `useLive: false`, without) the live mesh."""
    if not isinstance(body, dict):
        return _refused("", "expected a JSON object {\"files\": [...], \"suppress\": [...], \"meshConfig\": ...}")
    files = _files(body)
    if files is None:
        return _refused("files", "files must be a list of {\"name\": PATH, \"text\": TEXT}")
    suppress = body.get("suppress", [])
    if not isinstance(suppress, list) or not all(isinstance(s, str) for s in suppress):
        return _refused("suppress", "suppress must be a list of CODE=RESOURCE strings")
    try:
        rules = parse_suppressions(suppress)
    except ConfigError as e:
        return _refused("suppress", str(e))
    use_live = bool(body.get("useLive", True))
    mesh = dict(mesh_config) if use_live else {}  # files alone: Istio's defaults unless meshConfig is given
    text = body.get("meshConfig")
    if text is not None:
        try:
            given = (yaml.safe_load(text) or {}) if isinstance(text, str) else None
        except yaml.YAMLError as e:
            return _refused("meshConfig", str(e))
        if not isinstance(given, dict):
            return _refused("meshConfig", "mesh config must be a YAML mapping")
        mesh = given
    loaded = load_texts(files)
    live = live_resources(live_docs) if use_live else []
    given = {r.key for r in loaded.resources}
    resources = [*(r for r in live if r.key not in given), *loaded.resources]
    messages = []
    for d in apply_suppressions(analyze(resources, mesh), rules):
        item = d.as_dict()
        item["reference"] = d.location
        item["namespace"] = d.resource.namespace if d.resource is not None else None
        item["text"] = d.render()
        messages.append(item)
    notes = [{"namespace": r.namespace, "text": line} for r in resources for line in not_enforced(r)]
    return 200, {"messages": messages, "notes": notes, "errors": [str(e) for e in loaded.errors]}


class LastAnswer(Generic[T]):
    """The answer to the last question, kept while the question (the live mesh and the request) is the same;
    computed off the event loop."""

    def __init__(self) -> None:
        self._last: tuple[str, T] | None = None

    async def get(self, question: Any, compute: Callable[[], T]) -> T:
        key = hashlib.sha256(json.dumps(question, sort_keys=True, default=str).encode()).hexdigest()
        last = self._last
        if last is None or last[0] != key:
            import asyncio  # (only here: the CLI runs `answer` in process, without an event loop)

            last = (key, await asyncio.to_thread(compute))
            self._last = last
        return last[1]
