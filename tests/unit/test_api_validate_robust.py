"""validate() never raises: Istio documents with fields replaced by values of every wrong type (seeded)."""

from __future__ import annotations

import copy
import dataclasses
import random

from sailmesh.api.parse import load_file
from sailmesh.api.validate import INTERNAL, validate

WRONG = [None, "", "x*", -1, 0, 70000, 1.5, True, [], [1, "a", None], {}, {"a": [None]}, {"": ""}]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def test_mutated_documents_never_crash(conformance):
    rng = random.Random(20261122)
    resources = []
    for f in sorted((conformance / "validation").glob("*/*.yaml")):
        resources.extend(load_file(str(f)).resources)
    checked = 0
    for res in resources:
        raw = dict(res.raw)
        raw.pop("_err", None)
        paths = [p for p in _paths(raw) if p and p[0] in ("spec", "metadata")]
        for _ in range(40):
            doc = copy.deepcopy(raw)
            path = rng.choice(paths)
            _set(doc, path, rng.choice(WRONG))
            spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
            found = validate(dataclasses.replace(res, raw=doc, spec=spec))
            assert not [i for i in found if INTERNAL in i.message], (path, found)
            checked += 1
    assert checked > 10000
