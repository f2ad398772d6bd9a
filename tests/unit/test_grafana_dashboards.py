"""The Grafana dashboards: every PromQL expression parses (promtool) and uses only metrics and labels we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from sailmesh.agent.telemetry import HTTP_LABELS, TCP_LABELS, IstioMetrics, local_workload
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.grafana import dashboards
from sailmesh.settings import Settings

# What sailmesh exports, read from the definitions themselves: the agent's Istio standard metrics
# (agent/telemetry.py: IstioMetrics, HTTP_LABELS, TCP_LABELS) and a control plane's registry (controlplane/app.py).
# The control plane's label names are listed here and checked against its registry, which refuses a metric
# registered again with other labels. Istio exposes its pilot/galley/citadel counters without `_total`, as we do.
CONTROL_PLANE_LABELS = {
    "pilot_xds_pushes": ("type",), "pilot_total_xds_rejects": ("type",), "pilot_xds_expired_nonce": ("type",),
    "pilot_xds_send_errors": ("type",), "pilot_proxy_convergence_time": ("type",), "pilot_xds_push_time": ("type",),
    "galley_validation_failed": ("group", "version", "resource", "reason"),
}


def _series(family: Any, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    if family.type == "histogram":
        return {f"{family.name}_bucket": labels | {"le"}, f"{family.name}_sum": labels,
                f"{family.name}_count": labels}
    name = family.name + "_total" if family.type == "counter" else family.name  # prometheus_client strips it
    return {name: labels}


def exported() -> dict[str, frozenset[str]]:
    """Every series name sailmesh exports -> its label names (histograms as _bucket (with le), _sum, _count)."""
    out: dict[str, frozenset[str]] = {}
    istio = IstioMetrics(local_workload("reviews-v1-0", "default", {"app": "reviews"}, "Kubernetes"))
    for family in istio.collect():
        labels = TCP_LABELS if family.name.startswith("istio_tcp_") else HTTP_LABELS
        out.update(_series(family, frozenset(labels)))
    registry = ControlPlane(ControlPlaneOptions(), Settings()).metrics
    for family in list(registry.collect()):
        labels = CONTROL_PLANE_LABELS.get(family.name, ())
        kind = {"unknown": "counter"}.get(family.type, family.type)
        if kind == "histogram":
            registry.histogram(family.name, "", (1.0,), labels)  # raises ValueError if defined with other labels
        else:
            getattr(registry, kind)(family.name, "", labels)
        out.update(_series(family, frozenset(labels)))
    return out


def test_the_exported_list_is_istios() -> None:
    known = exported()
    for name in ("istio_requests_total", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
                 "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                 "istio_request_duration_milliseconds_bucket", "istio_request_bytes_bucket",
                 "istio_response_bytes_bucket", "pilot_xds", "pilot_xds_pushes", "pilot_proxy_convergence_time_bucket",
                 "pilot_xds_push_time_bucket", "pilot_total_xds_rejects", "pilot_total_xds_internal_errors",
                 "galley_validation_failed", "citadel_server_csr_count", "citadel_server_success_cert_issuance_count"):
        assert name in known, name
    assert {"reporter", "destination_service", "response_code", "connection_security_policy"} <= known[
        "istio_requests_total"]
    assert "response_code" not in known["istio_tcp_sent_bytes_total"]
    assert known["pilot_xds_pushes"] == {"type"}


# -- a small PromQL reader: which metric names and label names an expression uses --------------------------------

FUNCTIONS_AND_AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "round", "vector", "scalar", "abs", "ceil",
    "floor", "clamp_min", "clamp_max", "label_replace", "label_join", "sort", "sort_desc", "time", "absent",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "resets", "changes", "deriv",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", *GROUPING}
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\[[^\]]*\]|[A-Za-z_:][A-Za-z0-9_:]*'
                   r'|\d+(?:\.\d+)?(?:e[+-]?\d+)?|=~|!~|!=|==|>=|<=|[(){},=<>+\-*/%^]|\s+')


def tokens(expr: str) -> list[str]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        assert m, f"cannot read PromQL at {expr[pos:pos + 30]!r} in {expr!r}"
        if not m.group().isspace():
            out.append(m.group())
        pos = m.end()
    return out


def uses(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric name, label names matched on it) per selector, and the labels grouped by/on anywhere."""
    toks = tokens(expr)
    selectors: list[tuple[str, set[str]]] = []
    grouped: set[str] = set()
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in GROUPING and nxt == "(":
            j = i + 2
            while toks[j] != ")":
                if toks[j] != ",":
                    grouped.add(toks[j])
                j += 1
            i = j + 1
            continue
        if t == "{" or (re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", t) and t not in KEYWORDS):
            if t != "{" and (nxt == "(" or (nxt in ("by", "without") and t in FUNCTIONS_AND_AGGREGATIONS)):
                assert t in FUNCTIONS_AND_AGGREGATIONS, f"unknown function {t} in {expr!r}"
                i += 1
                continue
            name = "" if t == "{" else t
            labels: set[str] = set()
            j = i if t == "{" else i + 1
            if j < len(toks) and toks[j] == "{":
                j += 1
                while toks[j] != "}":
                    if toks[j] not in (",",) and toks[j + 1] in ("=", "!=", "=~", "!~"):
                        labels.add(toks[j])
                        j += 3
                    else:
                        j += 1
                j += 1
            if name == "" and "__name__" not in labels:
                raise AssertionError(f"selector without a metric name in {expr!r}")
            selectors.append((name, labels))
            i = j
            continue
        i += 1
    return selectors, grouped


# -- what the dashboards hold ----------------------------------------------------------------------------------------

VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def concrete(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts: intervals by a duration, others (in strings) by x."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    for m in VARIABLE.finditer(expr):  # every other variable sits inside a label matcher's string
        before = expr[:m.start()]
        assert before.count('"') % 2 == 1, f"variable {m.group()} outside a string in {expr!r}"
    return VARIABLE.sub("x", expr)


def expressions() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, where, PromQL) for every panel target and every variable's label_values selector."""
    for path in dashboards():
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                yield path.name, f"panel {panel['title']!r} {t['refId']}", t["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
                assert m, var["query"]["query"]
                # label_values(selector, label): the selector as an expression, the label as a grouping.
                yield path.name, f"variable {var['name']}", f"count by ({m.group(2)}) ({m.group(1)})"


def test_four_dashboards_under_the_projects_name() -> None:
    boards = {p.name: json.loads(p.read_text()) for p in dashboards()}
    assert set(boards) == {f"sailmesh-{v}-dashboard.json" for v in ("mesh", "service", "workload", "controlplane")}
    for name, b in boards.items():
        assert b["uid"].startswith("sailmesh-") and b["title"].startswith("sailmesh / "), name
        assert "sailmesh" in b["tags"]
        ids = [p["id"] for p in b["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in b["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (name, p["title"])
            assert p["type"] == "row" or p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_expression_uses_only_exported_metrics_and_labels() -> None:
    known = exported()
    checked = 0
    for board, where, expr in expressions():
        selectors, grouped = uses(concrete(expr))
        assert selectors, (board, where, expr)
        in_scope: set[str] = set()
        for name, labels in selectors:
            assert name in known, f"{board} {where}: {name} is not a metric sailmesh exports"
            assert labels <= known[name], f"{board} {where}: {name} has no label {sorted(labels - known[name])}"
            in_scope |= known[name]
        assert grouped <= in_scope, f"{board} {where}: grouping by {sorted(grouped - in_scope)} in {expr!r}"
        checked += 1
    assert checked > 60


def test_legends_name_only_labels_the_series_keep() -> None:
    for path in dashboards():
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel.get("targets", []):
                _, grouped = uses(concrete(t["expr"]))
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                    assert label in grouped, f"{path.name} {panel['title']!r}: legend {label} is aggregated away"


def test_every_expression_parses_with_promtool(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's prometheus package (scripts/test does, as root)")
    rules: list[dict[str, Any]] = []
    where: list[str] = []
    for board, place, expr in expressions():
        rules.append({"record": f"sailmesh:check:{len(rules)}", "expr": concrete(expr)})
        where.append(f"{board} {place}")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "sailmesh-grafana", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout + r.stderr


def test_promtool_check_can_fail(tmp_path) -> None:
    """The check above is real: a broken expression makes promtool fail."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian's prometheus package (scripts/test does, as root)")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": "sum by (le (rate(istio_requests_total[1m]))"}]}]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def test_the_reader_finds_metrics_labels_and_groupings() -> None:
    sel, grouped = uses('histogram_quantile(0.99, sum by (le, destination_service) (rate('
                        'istio_request_duration_milliseconds_bucket{reporter="source", response_code!~"5.."}[1m])))'
                        ' / on (destination_service) group_left sum(up) by (job) or vector(0)')
    assert sel == [("istio_request_duration_milliseconds_bucket", {"reporter", "response_code"}), ("up", set())]
    assert grouped == {"le", "destination_service", "job"}
    with pytest.raises(AssertionError, match="outside a string"):
        concrete("rate(x[$window])")
