"""The Helm chart (charts/sailmesh) written from the same generator as `sailmesh manifest generate`.

`python -m sailmesh.install.chart [CHART_DIR]` rewrites the chart: crds/ holds the CRDs as generated, templates/
the other objects with the values that vary replaced by Go template actions (`.Release.Namespace`, `.Values.image`,
`.Values.webhookURL`, `.Values.ingressGateway.enabled`, ...). A unit test checks the committed chart equals what
this writes and renders it (tests/unit/test_install_chart.py), so the chart and `manifest generate` cannot drift.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import yaml

from sailmesh import __version__
from sailmesh.install.manifests import Values, gateway, generate, istiod, mesh_config, rbac, webhook_configurations
from sailmesh.settings import ProxyPorts

NS, IMAGE, ACCESS_LOG = "SAILMESHNS", "SAILMESHIMAGE", "SAILMESHACCESSLOG"
ENV_NAME, ENV_VALUE = "SAILMESHENVNAME", "SAILMESHENVVALUE"  # one `pilot.env` entry, made a range over the map
DEFAULT_CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "sailmesh"

CHART_YAML = f"""apiVersion: v2
name: sailmesh
description: sailmesh, an Istio-compatible service mesh - control plane, webhooks, gateways and Istio's CRDs
type: application
version: {__version__}
appVersion: "{__version__}"
"""

VALUES_YAML = f"""# The same settings as `sailmesh install` (sailmesh/install/manifests.py, Values); profiles:
#   minimal: ingressGateway.enabled=false
#   default: (these values)
#   demo:    egressGateway.enabled=true, meshConfig.accessLogFile=/dev/stdout
# Install into istio-system: helm install sailmesh charts/sailmesh -n istio-system --create-namespace
image: sailmesh/sailmesh:{__version__}
revision: default
# "" : the API server calls the webhooks through Service istiod; else this base URL (no trailing slash)
webhookURL: ""
ingressGateway:
  enabled: true
egressGateway:
  enabled: false
meshConfig:
  accessLogFile: ""
pilot:
  # the control plane's extra environment (Istio's values.pilot.env), e.g. PILOT_ENABLE_STATUS: "true"
  env: {{}}
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the mesh config) as literal blocks, readable in the chart."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s
                                                             else None))


def _dump(objs: list[dict[str, Any]]) -> str:
    text = "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=1000) for o in objs)
    return (text.replace(NS, "{{ .Release.Namespace }}").replace(IMAGE, "{{ .Values.image }}")
            .replace(ACCESS_LOG, "{{ .Values.meshConfig.accessLogFile }}"))


def _client_config(text: str, path: str) -> str:
    """The service clientConfig, or the webhookURL one when set."""
    block = (f"  clientConfig:\n    service:\n      name: istiod\n      namespace: {{{{ .Release.Namespace }}}}\n"
             f"      path: {path}\n      port: 443\n")
    templ = (f"  clientConfig:\n    {{{{- if .Values.webhookURL }}}}\n    url: {{{{ .Values.webhookURL }}}}{path}\n"
             f"    {{{{- else }}}}\n    service:\n      name: istiod\n      namespace: {{{{ .Release.Namespace }}}}\n"
             f"      path: {path}\n      port: 443\n    {{{{- end }}}}\n")
    assert block in text
    return text.replace(block, templ)


def _env_range(text: str) -> str:
    """The placeholder env entry as Istio's chart writes `pilot.env`: a range over the map (Helm sorts its keys)."""
    entry = f"        - name: {ENV_NAME}\n          value: {ENV_VALUE}\n"
    assert entry in text
    return text.replace(entry, "        {{- range $key, $val := .Values.pilot.env }}\n        - name: {{ $key }}\n"
                               "          value: {{ $val | quote }}\n        {{- end }}\n")


def templates() -> dict[str, str]:
    """templates/<file> -> text."""
    v = Values(namespace=NS, image=IMAGE, pilot_env=((ENV_NAME, ENV_VALUE),))
    mesh = mesh_config(v)
    assert '"accessLogFile": ""' in mesh["data"]["mesh"]
    mesh["data"]["mesh"] = mesh["data"]["mesh"].replace('"accessLogFile": ""', f'"accessLogFile": "{ACCESS_LOG}"')
    health = ProxyPorts().health
    ingress = gateway(v, "istio-ingressgateway", "ingressgateway",
                      [("status-port", health, health), ("http2", 80, 8080), ("https", 443, 8443)], "LoadBalancer")
    egress = gateway(v, "istio-egressgateway", "egressgateway", [("http2", 80, 8080), ("https", 443, 8443)],
                     "ClusterIP")
    hooks = _dump(webhook_configurations(v))
    hooks = _client_config(_client_config(hooks, "/validate"), "/inject")
    return {
        "rbac.yaml": _dump(rbac(v)),
        "configmap.yaml": _dump([mesh]),
        "istiod.yaml": _env_range(_dump(istiod(v))),
        "ingressgateway.yaml": "{{- if .Values.ingressGateway.enabled }}\n" + _dump(ingress) + "{{- end }}\n",
        "egressgateway.yaml": "{{- if .Values.egressGateway.enabled }}\n" + _dump(egress) + "{{- end }}\n",
        "webhooks.yaml": hooks,
    }


def files() -> dict[str, str]:
    """Every file of the chart, by path relative to the chart directory."""
    crds = [o for o in generate(Values()) if o["kind"] == "CustomResourceDefinition"]
    out = {"Chart.yaml": CHART_YAML, "values.yaml": VALUES_YAML,
           "crds/crds.yaml": "---\n".join(yaml.dump(o, Dumper=yaml.CSafeDumper, sort_keys=False, width=1000)
                                           for o in crds)}
    out.update({f"templates/{k}": t for k, t in templates().items()})
    return out


def write(chart_dir: pathlib.Path = DEFAULT_CHART) -> list[pathlib.Path]:
    written = []
    for rel, text in files().items():
        path = chart_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CHART):
        print(p)
