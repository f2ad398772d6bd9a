"""The Helm chart (charts/sailmesh) renders to what `sailmesh manifest generate` prints, for each profile.

Rendered two ways: with a small renderer for the Go-template subset the chart uses (`{{ .Values.x }}`,
`{{ .Release.Namespace }}`, `if`/`else`/`end`, one `range $key, $val` over a map, `{{-` / `-}}` whitespace
trimming), always; and with the real
`helm template` when a helm binary is there (PATH or ~/.cache/sailmesh/helm, built from the helm.sh/helm/v3
module; skipped otherwise).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import subprocess
from typing import Any

import pytest
import yaml

from sailmesh.install import chart
from sailmesh.install.manifests import Values, generate
from sailmesh.testing import helm_build

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "sailmesh"
ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
RANGE = re.compile(r"\s*\{\{- range \$key, \$val := (\S+) \}\}(.*?)\s*\{\{- end \}\}", re.S)
PILOT_ENV = {"PILOT_ENABLE_STATUS": "true", "PILOT_ENABLE_ANALYSIS": "true", "SAILMESH_NOTE": "two words"}
PROFILES = {  # profile -> helm values that make it (values.yaml says the same)
    "minimal": {"ingressGateway": {"enabled": False}},
    "default": {},
    "demo": {"egressGateway": {"enabled": True}, "meshConfig": {"accessLogFile": "/dev/stdout"}},
}


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    node: Any = scope
    for part in path.lstrip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _ranges(text: str, scope: dict[str, Any]) -> str:
    """Expand `range $key, $val := .Values.map` blocks (keys sorted, as Helm does; `$val | quote` as JSON)."""
    def expand(m: re.Match[str]) -> str:
        items = sorted((_lookup(m.group(1), scope) or {}).items())
        return "".join(m.group(2).replace("{{ $key }}", k).replace("{{ $val | quote }}", json.dumps(str(v)))
                       for k, v in items)
    return RANGE.sub(expand, text)


def render(text: str, scope: dict[str, Any]) -> str:
    """The chart's Go-template subset: value actions, if/else/end, map ranges, whitespace trimming."""
    text = _ranges(text, scope)
    pieces: list[tuple[str, str]] = []  # ("text", s) or ("action", body)
    pos = 0
    for m in ACTION.finditer(text):
        before = text[pos:m.start()]
        if m.group(1):
            before = before.rstrip()
        pieces.append(("text", before))
        pieces.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", text[pos:]))
    out: list[str] = []
    emitting = [True]
    for kind, body in pieces:
        if kind == "text":
            if all(emitting):
                out.append(body)
        elif body.startswith("if "):
            emitting.append(bool(_lookup(body[3:].strip(), scope)))
        elif body == "else":
            emitting[-1] = not emitting[-1]
        elif body == "end":
            emitting.pop()
        elif all(emitting):
            value = _lookup(body, scope)
            assert value is not None, f"unknown value {body}"
            out.append(str(value))
    assert emitting == [True], "unbalanced if/end"
    return "".join(out)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d]


@functools.cache
def _crds() -> tuple[dict[str, Any], ...]:
    return tuple(_docs((CHART / "crds" / "crds.yaml").read_text()))


def _key(o: dict[str, Any]) -> tuple[str, str, str]:
    return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]


def _expected(profile: str, webhook_url: str = "", env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """generate()'s objects but the Namespace (Helm's --create-namespace makes it), in a stable order."""
    values = Values.for_profile(profile, webhook_url=webhook_url, pilot_env=tuple((env or {}).items()))
    objs = [o for o in generate(values) if o["kind"] != "Namespace"]
    return sorted(objs, key=_key)


def test_the_committed_chart_is_what_the_generator_writes() -> None:
    for rel, text in chart.files().items():
        assert (CHART / rel).read_text(encoding="utf-8") == text, (
            f"charts/sailmesh/{rel} is stale: python -m sailmesh.install.chart")


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("webhook_url", ["", "https://127.0.0.1:15017"])
@pytest.mark.parametrize("env", [{}, PILOT_ENV])
def test_the_chart_renders_to_manifest_generate(profile: str, webhook_url: str, env: dict[str, str]) -> None:
    """`pilot.env` is Istio's chart value for istiod's extra environment (`--set values.pilot.env.X=...` in
    istioctl); both put the variables, by name, after istiod's own."""
    values = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), PROFILES[profile])
    values["webhookURL"] = webhook_url
    values["pilot"]["env"] = env
    scope = {"Values": values, "Release": {"Namespace": "istio-system", "Name": "sailmesh"}}
    rendered = list(_crds())
    for t in sorted((CHART / "templates").glob("*.yaml")):
        rendered += _docs(render(t.read_text(), scope))
    assert sorted(rendered, key=_key) == _expected(profile, webhook_url, env)
    container = next(o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == "istiod")[
        "spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["POD_NAME", "POD_NAMESPACE", *sorted(env)]


def _helm() -> str | None:
    return helm_build.binary()  # PATH's helm, else the one scripts/test built into ~/.cache/sailmesh/helm


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("env", [{}, PILOT_ENV])
def test_helm_template_renders_to_manifest_generate(profile: str, env: dict[str, str], tmp_path: pathlib.Path) -> None:
    helm = _helm()
    if helm is None:
        pytest.skip("no helm binary (PATH or ~/.cache/sailmesh/helm/helm: python -m sailmesh.testing.helm_build, "
                    "which scripts/test runs)")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({**PROFILES[profile], "pilot": {"env": env}}))
    helm_env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "f"),
                "HELM_DATA_HOME": str(tmp_path / "d")}
    out = subprocess.run([helm, "template", "sailmesh", str(CHART), "-n", "istio-system", "--include-crds",
                          "-f", str(values)], capture_output=True, text=True, env=helm_env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(_docs(out.stdout), key=_key) == _expected(profile, env=env)


def test_helm_lint_passes(tmp_path: pathlib.Path) -> None:
    """`helm lint` of the committed chart: no error and no warning (INFO lines, such as the missing icon, allowed)."""
    helm = _helm()
    if helm is None:
        pytest.skip("no helm binary (PATH or ~/.cache/sailmesh/helm/helm: python -m sailmesh.testing.helm_build, "
                    "which scripts/test runs)")
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "f"),
           "HELM_DATA_HOME": str(tmp_path / "d")}
    out = subprocess.run([helm, "lint", str(CHART)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout
