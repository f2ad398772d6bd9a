"""`sailmesh analyze`: istioctl's output forms, thresholds and exit codes, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from sailmesh.cli.main import main

SVC = """apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
"""
VS_BAD_SUBSET = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
"""
POD = """apiVersion: v1
kind: Pod
metadata:
  name: reviews-v3
  labels: {app: reviews, version: v3}
spec:
  containers:
  - name: reviews
    image: reviews:v3
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v3
    labels: {version: v3}
"""


def write(tmp_path, name, *docs):
    p = tmp_path / name
    p.write_text("---\n".join(docs))
    return str(p)


def line_of(path, text):
    """1-based line of the first line containing text (istioctl points at the offending field)."""
    with open(path) as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line)


def test_missing_subset_is_ist0101_with_exit_79(tmp_path, capsys):
    """istioctl exits 79 (AnalyzerFoundIssuesError) when a message reaches the failure threshold (Error)."""
    f = write(tmp_path, "reviews.yaml", SVC, VS_BAD_SUBSET)
    rc = main(["analyze", "-f", f])
    out = capsys.readouterr().out
    assert rc == 79
    assert (
        f'Error [IST0101] (VirtualService default/reviews {f}:{line_of(f, "subset: v3")}) '
        'Referenced host+subset in destinationrule not found: "reviews+v3"'
    ) in out


def test_clean_config_prints_check_mark_and_exits_0(tmp_path, capsys):
    f = write(tmp_path, "ok.yaml", SVC, VS_BAD_SUBSET, DR, POD)
    rc = main(["analyze", "-f", f])
    cap = capsys.readouterr()
    assert rc == 0
    assert cap.out == ""
    assert "\u2714 No validation issues found when analyzing namespace: default." in cap.err


def test_json_and_yaml_outputs(tmp_path, capsys):
    f = write(tmp_path, "reviews.yaml", SVC, VS_BAD_SUBSET)
    assert main(["analyze", "-f", f, "-o", "json"]) == 79
    items = json.loads(capsys.readouterr().out)
    assert items == [
        {
            "code": "IST0101",
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
            "level": "Error",
            "message": 'Referenced host+subset in destinationrule not found: "reviews+v3"',
            "origin": "VirtualService default/reviews",
            "reference": f"{f}:{line_of(f, 'subset: v3')}",
        }
    ]
    assert main(["analyze", "-f", f, "-o", "yaml"]) == 79
    assert yaml.safe_load(capsys.readouterr().out) == items


def test_failure_threshold(tmp_path, capsys):
    """An Info message (IST0118 unnamed port) fails only with --failure-threshold Info."""
    svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector: {a: b}\n  ports:\n  - port: 80\n"
    f = write(tmp_path, "s.yaml", svc)
    assert main(["analyze", "-f", f]) == 0
    assert "Info [IST0118] (Service default/s" in capsys.readouterr().out
    assert main(["analyze", "-f", f, "--failure-threshold", "Info"]) == 79
    assert main(["analyze", "-f", f, "--failure-threshold", "Warning"]) == 0
    capsys.readouterr()
    assert main(["analyze", "-f", f, "--output-threshold", "Warning"]) == 0
    assert "IST0118" not in capsys.readouterr().out


def test_namespace_filter_and_all_namespaces(tmp_path, capsys):
    """As istioctl: only the selected namespace's messages unless -A."""
    other = VS_BAD_SUBSET.replace("name: reviews\nspec", "name: reviews\n  namespace: other\nspec")
    f = write(tmp_path, "o.yaml", other)
    assert main(["analyze", "-f", f]) == 0
    assert main(["analyze", "-f", f, "-A"]) == 79
    assert "VirtualService other/reviews" in capsys.readouterr().out
    assert main(["analyze", "-f", f, "-n", "other"]) == 79


def test_mesh_config_file_changes_result(tmp_path, capsys):
    """ServiceEntry TCP ports need addresses unless the mesh config turns on DNS auto-allocation.

    (resolution DNS: with the default NONE, Istio's ValidateServiceEntry adds a schema warning of its own.)"""
    se = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: db\nspec:\n"
          "  hosts: [db.example.com]\n  resolution: DNS\n  ports:\n  - {number: 5432, name: tcp, protocol: TCP}\n")
    f = write(tmp_path, "se.yaml", se)
    assert main(["analyze", "-f", f, "--failure-threshold", "Warning"]) == 79
    assert "IST0134" in capsys.readouterr().out
    mc = tmp_path / "mesh.yaml"
    mc.write_text("defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_AUTO_ALLOCATE: 'true'\n")
    assert main(["analyze", "-f", f, "--failure-threshold", "Warning", "--meshConfigFile", str(mc)]) == 0


def test_unreadable_input_is_reported_without_traceback(tmp_path, capsys):
    """Bad YAML and binary files: reported on stderr, exit 65 (istioctl's ExitDataError, for input it read but
    could not parse); a missing file: an error naming it, exit 1 and no analysis (istioctl's gatherFiles returns
    the stat error, which is its ExitUnknownError)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    rc = main(["analyze", "-f", str(bad), "-f", str(binary), "--use-live=false"])
    err = capsys.readouterr().err
    assert rc == 65
    assert "bad.yaml" in err and "bin.yaml" in err
    assert "Traceback" not in err
    missing = tmp_path / "missing.yaml"
    rc = main(["analyze", "-f", str(bad), "-f", str(missing)])
    out, err = capsys.readouterr()
    assert rc == 1 and not out, (rc, out)
    assert err.strip() == f"Error: {missing}: no such file or directory", err
    assert main(["analyze"]) == 64


def test_subprocess_exit_code_and_output(tmp_path):
    f = write(tmp_path, "reviews.yaml", SVC, VS_BAD_SUBSET)
    proc = subprocess.run(
        [sys.executable, "-m", "sailmesh", "analyze", "-f", f], capture_output=True, text=True, timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 79, proc.stderr
    assert proc.stdout.startswith("Error [IST0101] (VirtualService default/reviews ")


def test_suppress_rules_and_annotation(tmp_path, capsys):
    """istioctl's -S CODE=Kind name[.namespace] globs and the galley.istio.io/analyze-suppress annotation."""
    f = write(tmp_path, "reviews.yaml", SVC, VS_BAD_SUBSET)
    assert main(["analyze", "-f", f, "-S", "IST0101=VirtualService reviews.default"]) == 0
    assert main(["analyze", "-f", f, "-S", "IST0101=VirtualService *"]) == 0
    assert main(["analyze", "-f", f, "-S", "IST0102=VirtualService *"]) == 79
    assert main(["analyze", "-f", f, "-S", "nonsense"]) == 64
    annotated = VS_BAD_SUBSET.replace(
        "name: reviews\nspec", "name: reviews\n  annotations: {galley.istio.io/analyze-suppress: 'IST0101'}\nspec"
    )
    f2 = write(tmp_path, "annotated.yaml", SVC, annotated)
    capsys.readouterr()
    assert main(["analyze", "-f", f2]) == 0


FOO_AP = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
"""


def test_files_alone_at_the_control_plane_use_neither_its_live_config_nor_its_mesh_config() -> None:
    """`analyze -f F --use-live=false` sent to a running control plane (issue 11) answers what the CLI answers
    alone: the live resources are not analyzed, and the control plane's own mesh config is not used (Istio's
    defaults: a selector-less policy in foo is no mesh-wide policy, so it selects no workload: IST0127)."""
    from sailmesh.controlplane import analyze_api

    live = [yaml.safe_load(VS_BAD_SUBSET) | {"metadata": {"name": "reviews", "namespace": "default"}}]
    files = [{"name": "ap.yaml", "text": FOO_AP}]
    cp_mesh = {"rootNamespace": "foo"}
    alone = analyze_api.answer({"files": files, "useLive": False}, live, cp_mesh)
    assert alone == analyze_api.answer({"files": files, "useLive": False}, [], {})
    assert alone[0] == 200 and {m["code"] for m in alone[1]["messages"]} == {"IST0127"}, alone
    with_live = analyze_api.answer({"files": files, "useLive": True}, live, cp_mesh)
    codes = {m["code"] for m in with_live[1]["messages"]}
    assert codes == {"IST0101"}, codes  # the live VS's subset; foo is the root namespace: the policy is mesh-wide
