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

from sailmesh.grafana import dashboards

# What sailmesh exports. Istio's standard metrics and labels (istio.io/latest/docs/reference/config/metrics/):
# HTTP/gRPC metrics carry every label below; TCP metrics the same without response_code and grpc_response_status.
ISTIO_LABELS = frozenset({
    "reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_cluster", "request_protocol", "response_code", "response_flags",
    "grpc_response_status", "connection_security_policy",
})
TCP_LABELS = ISTIO_LABELS - {"response_code", "grpc_response_status"}
COUNTERS = {"istio_requests_total": ISTIO_LABELS, "istio_tcp_sent_bytes_total": TCP_LABELS,
            "istio_tcp_received_bytes_total": TCP_LABELS, "istio_tcp_connections_opened_total": TCP_LABELS,
            "istio_tcp_connections_closed_total": TCP_LABELS}
HISTOGRAMS = {"istio_request_duration_milliseconds": ISTIO_LABELS, "istio_request_bytes": ISTIO_LABELS,
              "istio_response_bytes": ISTIO_LABELS}
# The control plane's metrics on :15014/metrics (i10-metrics' definitions: server/metrics.py XdsMetrics,
# metrics.py CitadelMetrics, controlplane/app.py galley_validation_failed). Istio exposes its counters without
# `_total`, and so does sailmesh.
CONTROL_PLANE = {"pilot_xds": set(), "pilot_xds_pushes": {"type"}, "pilot_total_xds_rejects": {"type"},
                 "pilot_xds_expired_nonce": {"type"}, "pilot_total_xds_internal_errors": set(),
                 "pilot_xds_send_errors": {"type"},
                 "galley_validation_failed": {"group", "version", "resource", "reason"},
                 "citadel_server_csr_count": set(), "citadel_server_success_cert_issuance_count": set()}
CONTROL_PLANE_HISTOGRAMS = {"pilot_proxy_convergence_time": {"type"}, "pilot_xds_push_time": {"type"}}


def exported() -> dict[str, frozenset[str]]:
    """Every series name sailmesh exports -> its label names (histograms as _bucket (with le), _sum, _count)."""
    out = {name: frozenset(labels) for name, labels in {**COUNTERS, **CONTROL_PLANE}.items()}
    for name, labels in {**HISTOGRAMS, **CONTROL_PLANE_HISTOGRAMS}.items():
        out[f"{name}_bucket"] = frozenset(labels) | {"le"}
        out[f"{name}_sum"] = out[f"{name}_count"] = frozenset(labels)
    return out


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
