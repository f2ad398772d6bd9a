"""Issue 13, probes: a LocalWorkload's livenessProbe and startupProbe (Kubernetes' fields and defaults, httpGet and
tcpSocket) with Istio's probe rewriting: the sidecar's agent serves each on 15020 as `/app-health/<container>/
livez|readyz|startupz` (the app's status code, body stripped; 500 when the app cannot be reached; 404 for a probe it
was not given), the platform probes those paths as a kubelet does. A failing liveness probe restarts the app by its
restartPolicy; a startupProbe keeps liveness and readiness from running, and the instance out of the endpoints,
until it passes."""

from __future__ import annotations

import json
import os
import pathlib

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import eds_hosts, get, mesh_dir, recorded, state, workload

WEB_CLUSTER = "outbound|8000||web.default.svc.cluster.local::"

# An app whose health follows files in FLAGS: /started 200 once `started` exists; /healthz 500 while `sick` exists;
# its TCP port PORT_8001 accepts only while `tcp-closed` does not exist. It prints every probe path it is asked.
PROBED_APP = '''\
import http.server, os, signal, socket, threading, time
flags = os.environ["FLAGS"]
if os.environ.get("IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
def flag(name):
    return os.path.exists(os.path.join(flags, name))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, flush=True)
        code = 200
        if self.path == "/started" and not flag("started"):
            code = 500
        if self.path == "/healthz" and flag("sick"):
            code = 503
        self.send_response(code); self.end_headers(); self.wfile.write(b"body is stripped")
    def log_message(self, *a):
        pass
def tcp():
    s = None
    while True:
        if flag("tcp-closed") and s is not None:
            s.close(); s = None
        elif not flag("tcp-closed") and s is None:
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((os.environ["HOST"], int(os.environ["PORT_8001"]))); s.listen(16); s.settimeout(0.1)
        if s is None:
            time.sleep(0.1); continue
        try:
            s.accept()[0].close()
        except OSError:
            pass
threading.Thread(target=tcp, daemon=True).start()
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'''


STARTED_ON_8000 = ("  startupProbe:\n    tcpSocket:\n      port: 8000\n"
                   "    periodSeconds: 1\n    failureThreshold: 120\n")


def _web(tmp: pathlib.Path, probes: str, env: str = "") -> tuple[str, pathlib.Path]:
    flags = tmp / "flags"
    flags.mkdir(exist_ok=True)
    app = tmp / "probed.py"
    app.write_text(PROBED_APP)
    ports = "  ports:\n  - name: http\n    containerPort: 8000\n  - name: tcp\n    containerPort: 8001\n"
    web = workload("web", str(app), ports=False, extra=ports + probes, env=f'    FLAGS: "{flags}"\n' + env)
    return mesh_dir(tmp, workload("client", "{SLEEPER}", ports=False), web), flags


def _ip(state_dir: str, name: str) -> str:
    return next(i["address"] for i in state(state_dir)["instances"] if i["name"] == name)


def _healthy(state_dir: str) -> dict[str, bool]:
    """The platform's workload file, as the control plane reads it: instance -> healthy."""
    with open(os.path.join(state_dir, "workloads.json"), encoding="utf-8") as fh:
        return {w["name"]: w["healthy"] for w in json.load(fh)["workloads"]}


def _app_log(state_dir: str) -> list[str]:
    with open(os.path.join(state_dir, "logs", "web-0.default.log"), encoding="utf-8") as fh:
        return [ln.split()[1] for ln in fh if ln.startswith("GET ")]


def test_a_failing_http_liveness_probe_restarts_the_app_through_the_rewritten_path(tmp_path: pathlib.Path) -> None:
    # the startupProbe protects the start (Kubernetes' advice for slow starters): liveness runs once it passed
    probes = ("  livenessProbe:\n    httpGet:\n      path: /healthz\n      port: http\n"
              "    periodSeconds: 1\n    failureThreshold: 2\n" + STARTED_ON_8000)
    d, flags = _web(tmp_path, probes)
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip = _ip(mesh.state_dir, "web-0")
        wait_for(lambda: "web-0 startup probe passed" in mesh.output(), timeout=60, what="the startup probe")
        # Istio's rewrite: the agent answers on 15020 with the app's status code, the body stripped
        assert get(f"http://{web_ip}:15020/app-health/web/livez") == (200, "")
        assert get(f"http://{web_ip}:15020/app-health/web/readyz")[0] == 404  # no readinessProbe declared
        wait_for(lambda: "/healthz" in _app_log(mesh.state_dir), timeout=30, what="the kubelet's liveness probes")
        app = recorded(mesh.state_dir)["web-0.default"]
        (flags / "sick").write_text("")
        assert wait_for(lambda: get(f"http://{web_ip}:15020/app-health/web/livez")[0], timeout=10) == 503
        wait_for(lambda: "liveness probe failed 2 times in a row" in mesh.output(), timeout=30,
                 what="the liveness failure")
        (flags / "sick").unlink()
        # restartPolicy Always (the default): the kubelet stops the container and it is started again
        wait_for(lambda: recorded(mesh.state_dir)["web-0.default"]["pid"] != app["pid"], timeout=60,
                 what="the app to be restarted")
        wait_for(lambda: "app web-0.default ready again" in mesh.output(), timeout=60)
        assert "stopping app web-0.default (restartPolicy Always)" in mesh.output()
        assert get(f"http://{web_ip}:8000/")[0] == 200


def test_a_tcp_liveness_probe_with_restart_policy_never_stops_the_app_for_good(tmp_path: pathlib.Path) -> None:
    probes = ("  restartPolicy: Never\n  livenessProbe:\n    tcpSocket:\n      port: tcp\n"
              "    periodSeconds: 1\n    failureThreshold: 2\n"
              "  startupProbe:\n    tcpSocket:\n      port: tcp\n    periodSeconds: 1\n    failureThreshold: 120\n")
    d, flags = _web(tmp_path, probes)
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        wait_for(lambda: "web-0 startup probe passed" in mesh.output(), timeout=60, what="the startup probe")
        assert get(f"http://{web_ip}:15020/app-health/web/livez")[0] == 200
        app = recorded(mesh.state_dir)["web-0.default"]
        (flags / "tcp-closed").write_text("")
        assert wait_for(lambda: get(f"http://{web_ip}:15020/app-health/web/livez")[0] == 500, timeout=10)
        wait_for(lambda: "restartPolicy Never: not restarting it" in mesh.output(), timeout=30)
        assert "liveness probe failed 2 times in a row" in mesh.output()
        assert recorded(mesh.state_dir)["web-0.default"]["pid"] == app["pid"]
        wait_for(lambda: f"{web_ip}:8000" not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the stopped app's endpoint to leave the client's EDS")


def test_a_liveness_kill_waits_the_probes_termination_grace_period_not_the_pods(tmp_path: pathlib.Path) -> None:
    """Kubernetes' probe-level terminationGracePeriodSeconds: after a liveness failure the app gets that long between
    SIGTERM and SIGKILL instead of the pod's grace period (30 s here, as a Pod's default). The app ignores SIGTERM, so
    only the SIGKILL after the probe's 1 s can end it well before the pod's 30 s."""
    probes = ("  livenessProbe:\n    tcpSocket:\n      port: tcp\n    periodSeconds: 1\n    failureThreshold: 1\n"
              "    terminationGracePeriodSeconds: 1\n"
              "  startupProbe:\n    tcpSocket:\n      port: tcp\n    periodSeconds: 1\n    failureThreshold: 120\n")
    d, flags = _web(tmp_path, probes, env='    IGNORE_SIGTERM: "1"\n')
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        wait_for(lambda: "web-0 startup probe passed" in mesh.output(), timeout=60, what="the startup probe")
        app = recorded(mesh.state_dir)["web-0.default"]
        (flags / "tcp-closed").write_text("")
        wait_for(lambda: "liveness probe failed 1 times in a row" in mesh.output(), timeout=30,
                 what="the liveness failure")
        (flags / "tcp-closed").unlink()
        wait_for(lambda: "SIGTERM ignored" in (pathlib.Path(mesh.state_dir) / "logs" / "web-0.default.log").read_text(),
                 timeout=10, what="the app to get (and ignore) SIGTERM")
        # the pod's grace would keep the old process for 30 s; the probe's lets it go after 1 s
        wait_for(lambda: recorded(mesh.state_dir)["web-0.default"]["pid"] != app["pid"], timeout=20,
                 what="the app to be killed after the probe's grace period and restarted")


def test_the_startup_probe_gates_liveness_and_readiness_and_the_endpoint(tmp_path: pathlib.Path) -> None:
    """Kubernetes: "all other probes are disabled until the startup probe succeeds". /healthz fails all along
    (`sick`) until the app has started: liveness (failureThreshold 1) would kill it at once if it ran."""
    probes = ("  startupProbe:\n    httpGet:\n      path: /started\n      port: 8000\n"
              "    periodSeconds: 1\n    failureThreshold: 600\n"
              "  livenessProbe:\n    httpGet:\n      path: /healthz\n      port: http\n"
              "    periodSeconds: 1\n    failureThreshold: 1\n"
              "  readinessProbe:\n    tcpSocket:\n      port: 8000\n    periodSeconds: 1\n")
    d, flags = _web(tmp_path, probes)
    (flags / "sick").write_text("")
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        assert "web-0: waiting for the startupProbe" in mesh.output()
        app = recorded(mesh.state_dir)["web-0.default"]
        wait_for(lambda: _app_log(mesh.state_dir).count("/started") >= 3, timeout=30, what="3 startup probes")
        assert "/healthz" not in _app_log(mesh.state_dir)  # liveness has not run
        assert get(f"http://{web_ip}:15020/app-health/web/startupz")[0] == 500
        # out of the endpoints, though the app and its sidecar are up: the registry holds it unhealthy
        assert get(f"http://{web_ip}:15021/healthz/ready")[0] == 200
        assert _healthy(mesh.state_dir) == {"client-0": True, "web-0": False}
        assert f"{web_ip}:8000" not in eds_hosts(client_ip, WEB_CLUSTER)

        (flags / "sick").unlink()
        (flags / "started").write_text("")
        wait_for(lambda: f"{web_ip}:8000" in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint once the startup probe passed")
        assert "web-0 startup probe passed" in mesh.output()
        wait_for(lambda: "/healthz" in _app_log(mesh.state_dir), timeout=30, what="liveness probing after startup")
        assert recorded(mesh.state_dir)["web-0.default"]["pid"] == app["pid"]  # never killed
