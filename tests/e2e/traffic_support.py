"""Helpers for the traffic-management e2e tests: an app that says who answered (and fails on demand), and requests
sent through a workload's sidecar (its HTTP_PROXY, as `sailmesh exec` gives it)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Answers {"pod": POD_NAME, "headers": {...}}; while the file named by FAIL_FILE exists it answers 503.
APP = '''\
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        fail = os.environ.get("FAIL_FILE", "")
        code = 503 if fail and os.path.exists(fail) else 200
        body = json.dumps({"pod": os.environ["POD_NAME"], "headers": dict(self.headers)}).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'''

Get = Callable[..., tuple[int, dict]]  # type: ignore[type-arg]


def via(mesh: RunningMesh, workload: str, namespace: str = "default") -> Get:
    """get(url, headers={}) -> (status, JSON body) sent through `workload`'s sidecar."""
    inst = find_instance(MeshState.load(mesh.state_dir), workload, namespace)
    assert inst is not None, f"no workload {namespace}/{workload}"
    proxy = inst.env["HTTP_PROXY"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))

    def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
        req = urllib.request.Request(url, headers=dict(headers or {}))
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())

    return get


# A sleeping client in locality r1/z1 (its topology labels), for the locality tests.
CLIENT_IN_R1Z1 = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata:
  name: client
  labels: {app: client, topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
"""


# Service `web` on 8000, one `web` workload running APP, and a sleeping `client` (no locality).
WEB_AND_CLIENT = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8000, targetPort: 8000}]
  selector: {app: web}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web, labels: {app: web}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
"""


def located_web(places: Iterable[tuple[str, str]], distribution: str = "", failing: bool = False,
                networks: Mapping[str, str] | None = None) -> str:
    """Service `web` on 8000 (with `trafficDistribution` when given) and a `web-NAME` workload running APP per
    (NAME, locality), on `networks[NAME]` when given; `failing`: each fails its readiness probe (and answers 503)
    while `{CONFIG}/fails-NAME` exists (`failing_while`)."""
    spec = f"  trafficDistribution: {distribution}\n" if distribution else ""
    out = ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n" + spec
           + "  ports: [{name: http, port: 8000, targetPort: 8000}]\n  selector: {app: web}\n")
    for name, place in places:
        out += (f"---\napiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\n"
                f"metadata: {{name: web-{name}, labels: {{app: web}}}}\nspec:\n  command: [\"python\", \"{{APP}}\"]\n"
                f"  locality: {place}\n  ports: [{{name: http, containerPort: 8000}}]\n")
        if (networks or {}).get(name):
            out += f"  network: {(networks or {})[name]}\n"
        if failing:
            out += (f"  env: {{FAIL_FILE: \"{{CONFIG}}/fails-{name}\"}}\n"
                    "  readinessProbe: {httpGet: {path: /, port: 8000}, periodSeconds: 1, failureThreshold: 1}\n")
    return out


@contextlib.contextmanager
def failing_while(config: pathlib.Path | str, name: str) -> Iterator[None]:
    """`web-NAME` of `located_web(..., failing=True)` fails its readiness probe inside the block."""
    marker = pathlib.Path(config) / f"fails-{name}"
    marker.touch()
    try:
        yield
    finally:
        marker.unlink()


@contextlib.contextmanager
def running(factory: pytest.TempPathFactory, name: str, mesh_yaml: str,
            files: dict[str, str] | None = None) -> Iterator[tuple[RunningMesh, pathlib.Path]]:
    """An embedded mesh of `mesh_yaml` (`{APP}` replaced by APP's path, `{CONFIG}` by the config directory), and
    its config directory; `files` are written there first (e.g. `mesh-config.yaml`)."""
    config = factory.mktemp(f"{name}-config")
    app = config / "app.py"
    app.write_text(APP)
    (config / "mesh.yaml").write_text(mesh_yaml.replace("{APP}", str(app)).replace("{CONFIG}", str(config)))
    for file, text in (files or {}).items():
        (config / file).write_text(text)
    with RunningMesh(str(factory.mktemp(f"{name}-state")), dirs=[str(config)]) as m:
        yield m, config


def pods(get: Get, url: str, n: int) -> Counter[str]:
    """Which pods answered n GETs of url (`HTTP <status>` for answers other than 200)."""
    return Counter(str(body.get("pod")) if status == 200 else f"HTTP {status}"
                   for status, body in (get(url) for _ in range(n)))


def _json(raw: bytes) -> dict:  # type: ignore[type-arg]
    try:
        out = json.loads(raw)
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return out if isinstance(out, dict) else {"raw": out}


def admin_ip(mesh: RunningMesh, workload: str, namespace: str = "default") -> str:
    inst = find_instance(MeshState.load(mesh.state_dir), workload, namespace)
    assert inst is not None
    return inst.address


def route_dump(ip: str) -> str:
    with NO_PROXY.open(f"http://{ip}:15000/config_dump?resource=dynamic_route_configs", timeout=5) as r:
        return r.read().decode()
