"""`sailmesh validate`: exit codes, text and JSON output, through main() and once as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from sailmesh.cli.main import main
from tests.conftest import ROOT

GOOD = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"""
BAD = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: -5
"""


def test_valid_file_exits_0(tmp_path, capsys):
    (tmp_path / "dr.yaml").write_text(GOOD)
    assert main(["validate", "-f", str(tmp_path / "dr.yaml")]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "1 resource(s) valid" in out.err


def test_invalid_file_text_output(tmp_path, capsys):
    p = tmp_path / "reviews.yaml"
    p.write_text(BAD)
    assert main(["validate", "-f", str(p)]) == 1
    out = capsys.readouterr()
    assert f"{p}:12: VirtualService default/reviews: spec.http[0].route[1].weight: weight -5 < 0" \
        in out.out.splitlines()
    assert "error(s) in 1 of 1 resource(s)" in out.err


def test_json_output_and_several_inputs(tmp_path, capsys):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "good.yaml").write_text(GOOD)
    (d / "bad.yaml").write_text(BAD)
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [\n")
    rc = main(["validate", "-f", str(d), "-f", str(tmp_path / "broken.yaml"), "-o", "json"])
    assert rc == 1
    items = json.loads(capsys.readouterr().out)
    assert {"file", "line", "resource", "field", "message"} <= set(items[0])
    weight = [i for i in items if i["field"] == "spec.http[0].route[1].weight"]
    assert weight and weight[0]["line"] == 12 and weight[0]["resource"] == "VirtualService default/reviews"
    assert any(i["file"].endswith("broken.yaml") and "invalid YAML" in i["message"] for i in items)


def test_missing_file_and_unknown_kind(tmp_path, capsys):
    # (HTTPRoute, then BackendTLSPolicy were the example until they were served; UDPRoute is not, as in Istio)
    (tmp_path / "route.yaml").write_text("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\n"
                                          "metadata: {name: r}\n")
    assert main(["validate", "-f", str(tmp_path / "route.yaml"), "-f", str(tmp_path / "nope")]) == 1
    out = capsys.readouterr().out
    assert "route.yaml:1: unknown kind 'UDPRoute'" in out and "no such file or directory" in out


def test_subprocess(tmp_path):
    p = tmp_path / "reviews.yaml"
    p.write_text(BAD)
    proc = subprocess.run([sys.executable, "-m", "sailmesh", "validate", "-f", str(p), "-o", "json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert any(i["message"] == "weight -5 < 0" for i in json.loads(proc.stdout))
    ok = tmp_path / "ok.yaml"
    ok.write_text(GOOD)
    proc = subprocess.run([sys.executable, "-m", "sailmesh", "validate", "-f", str(ok)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "valid" in proc.stderr


def test_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(BAD))
    assert main(["validate", "-f", "-"]) == 1
    assert "<stdin>:12: VirtualService default/reviews: spec.http[0].route[1].weight" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD))
    assert main(["validate", "-f", "-"]) == 0
