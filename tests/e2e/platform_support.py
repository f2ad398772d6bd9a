"""A tiny mesh for the platform tests: `web` (an HTTP app with a sidecar), `client` (a sidecar whose Envoy shows
web's endpoints), optionally more workloads; and helpers to read the state file and Envoy's /clusters."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
import urllib.request

from sailmesh.platform.state import pid_alive

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

APP = '''\
import http.server, os, sys
print("web app starting on", os.environ["HOST"], os.environ["PORT"], flush=True)
if os.environ.get("FAIL"):
    print("boom: " + os.environ["FAIL"], flush=True)
    sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        flag = os.environ.get("NOT_READY_FILE", "")
        if self.path == "/ready" and flag and os.path.exists(flag):
            self.send_response(503); self.end_headers(); return
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'''

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 8000
  selector:
    app: web
"""


def workload(name: str, app: str, *, ports: bool = True, extra: str = "", env: str = "") -> str:
    spec = f"""\
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata:
  name: {name}
  labels:
    app: {name if name != 'web' else 'web'}
spec:
  command: ["python", "{app}"]
"""
    if ports:
        spec += "  ports:\n  - name: http\n    containerPort: 8000\n"
    if env:
        spec += f"  env:\n{env}"
    return spec + extra


def mesh_dir(tmp: pathlib.Path, *workloads: str) -> str:
    """A config dir with the app script, the web Service and the given LocalWorkload documents."""
    d = tmp / "mesh"
    d.mkdir(parents=True, exist_ok=True)
    app = d / "app.py"
    app.write_text(APP)
    sleeper = d / "sleeper.py"
    sleeper.write_text("import time\nwhile True:\n    time.sleep(3600)\n")
    docs = [SERVICE, *[w.replace("{APP}", str(app)).replace("{SLEEPER}", str(sleeper)) for w in workloads]]
    (d / "mesh.yaml").write_text("".join(docs))
    return str(d)


def state(state_dir: str) -> dict:  # type: ignore[type-arg]
    with open(os.path.join(state_dir, "mesh.json"), encoding="utf-8") as fh:
        return json.load(fh)  # type: ignore[no-any-return]


def recorded(state_dir: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """Process records by name."""
    return {p["name"]: p for p in state(state_dir)["processes"]}


def envoy_pids(state_dir: str) -> list[int]:
    """The Envoys' pids, from each agent's envoy.pid."""
    out = []
    root = os.path.join(state_dir, "proxies")
    for name in os.listdir(root) if os.path.isdir(root) else []:
        with open(os.path.join(root, name, "envoy.pid"), encoding="ascii") as fh:
            out.append(int(fh.read().strip()))
    return out


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


def get(url: str) -> tuple[int, str]:
    try:
        with NO_PROXY.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def eds_hosts(admin_ip: str, cluster_prefix: str) -> set[str]:
    """The host addresses of the clusters starting with cluster_prefix in Envoy's /clusters (EDS as applied)."""
    _, body = get(f"http://{admin_ip}:15000/clusters")
    out = set()
    for line in body.splitlines():
        if line.startswith(cluster_prefix) and "::cx_active::" in line:
            out.add(line.split("::")[1])
    return out
