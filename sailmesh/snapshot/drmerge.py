"""Several DestinationRules for one host in one namespace, consolidated as Istio's mergeDestinationRule does.

Istio (pilot/pkg/model/destination_rule.go, push_context.go setDestinationRules) sorts the rules with a
workloadSelector first, then by creation time, and walks them: a rule merges into an earlier consolidated rule
when both have no selector or both the same selector, and (ENABLE_ENHANCED_DESTINATIONRULE_MERGE, on by default)
their exportTo sets are equal - or the new exportTo is a superset of the earlier one's, in which case it is also
kept as a rule of its own. Merging appends the subsets whose names are new (a duplicate name keeps the earlier
subset) and takes the new rule's top-level trafficPolicy only when the merged rule has none; everything else
(name, exportTo, workloadSelector) stays the first rule's. A rule merged into none is kept on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule
from sailmesh.api.resource import Resource


def selector(dr: Resource) -> Mapping[str, str] | None:
    """A DestinationRule's workloadSelector matchLabels ({} for an empty selector), None without one."""
    ws = model_of(dr, DestinationRule).workload_selector
    return None if ws is None else dict(ws.match_labels or {})


def _export_set(dr: Resource, sel: Mapping[str, str] | None) -> frozenset[str]:
    """Istio's exportToSet: the rule's exportTo as written; a rule with a selector is private (`.`)."""
    if sel is not None:
        return frozenset({"."})
    return frozenset(str(e) for e in model_of(dr, DestinationRule).export_to or ())


@dataclasses.dataclass
class _Entry:
    first: Resource
    spec: dict[str, Any]
    sel: Mapping[str, str] | None
    export: frozenset[str]
    merged: bool = False


def _merge_into(entry: _Entry, spec: Mapping[str, Any]) -> None:
    names = {str(s.get("name")) for s in entry.spec.get("subsets") or ()}
    added = [s for s in spec.get("subsets") or () if str(s.get("name")) not in names]
    if added:
        entry.spec["subsets"] = [*(entry.spec.get("subsets") or ()), *added]
    if entry.spec.get("trafficPolicy") is None and spec.get("trafficPolicy") is not None:
        entry.spec["trafficPolicy"] = spec["trafficPolicy"]
    entry.merged = True


def consolidate(rules: Sequence[Resource]) -> list[Resource]:
    """The consolidated rules of one namespace for one host (`rules` oldest first), in Istio's order: rules with a
    selector first. A rule that absorbed others is a copy with the merged spec and the first rule's metadata."""
    if len(rules) < 2:
        return list(rules)
    ordered = sorted(rules, key=lambda r: selector(r) is None)  # stable: creation order within each group
    entries: list[_Entry] = []
    for dr in ordered:
        sel = selector(dr)
        export = _export_set(dr, sel)
        separate = True
        for entry in entries:
            if export == entry.export:
                separate = False
            elif entry.export and export >= entry.export:
                separate = True
            else:
                separate = True
                continue
            both_without = sel is None and entry.sel is None
            both_with = sel is not None and entry.sel is not None
            if both_with and dict(entry.sel or {}) != dict(sel or {}):
                separate = True
                continue
            if both_without or both_with:
                separate = False
            _merge_into(entry, dr.spec)
        if separate:
            entries.append(_Entry(dr, dict(dr.spec), sel, export))
    return [e.first.replace(spec=e.spec) if e.merged else e.first for e in entries]
