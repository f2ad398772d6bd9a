"""Issue 13, probes: a LocalWorkload's `exec` and `grpc` probes (Kubernetes' fields). An exec probe is not
rewritten by Istio's injector (the kubelet runs it in the container): the platform runs its command as a kubelet
would, with the app's environment and working directory, healthy on exit status 0. A grpc probe is rewritten like
httpGet (Istio rewrites grpc probes to the agent): the agent serves `/app-health/<container>/readyz|livez` on 15020
and answers 200 when the app's grpc.health.v1 Health/Check says SERVING, 500 otherwise (pilot-agent's
handleAppProbeGRPC); the sidecar's readiness includes the readinessProbe. A failing readinessProbe takes the
endpoint out of every proxy and a passing one brings it back; a failing livenessProbe restarts the app."""

from __future__ import annotations

import pathlib

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import eds_hosts, get, mesh_dir, recorded, state, workload

WEB_CLUSTER = "outbound|8000||web.default.svc.cluster.local::"

# HTTP on PORT (the mesh's service port 8000) and grpc.health.v1 on PORT_9000, encoded by hand: service "" is
# NOT_SERVING while FLAGS/unready exists, service "liveness" NOT_SERVING while FLAGS/sick exists, any other
# service SERVICE_UNKNOWN.
GRPC_APP = '''\
import asyncio, http.server, os, threading
import grpc
flags = os.environ["FLAGS"]
def flag(name):
    return os.path.exists(os.path.join(flags, name))
def status(request):
    service = request[2:].decode() if request else ""
    if service == "":
        return 2 if flag("unready") else 1
    if service == "liveness":
        return 2 if flag("sick") else 1
    return 3
async def check(request, context):
    print("grpc health check", repr(request), flush=True)
    return bytes([8, status(request)])
async def serve():
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(check, request_deserializer=lambda b: b,
                                                  response_serializer=lambda b: b)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpc.health.v1.Health",
                                                                          {"Check": handler}),))
    server.add_insecure_port(os.environ["HOST"] + ":" + os.environ["PORT_9000"])
    await server.start()
    await server.wait_for_termination()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
httpd = http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
asyncio.run(serve())
'''

PORTS = "  ports:\n  - name: http\n    containerPort: 8000\n  - name: grpc\n    containerPort: 9000\n"


def _ip(state_dir: str, name: str) -> str:
    return next(i["address"] for i in state(state_dir)["instances"] if i["name"] == name)


def _mesh(tmp: pathlib.Path, app: str, extra: str, ports: str = PORTS) -> tuple[str, pathlib.Path]:
    flags = tmp / "flags"
    flags.mkdir(exist_ok=True)
    web = workload("web", app, ports=False, extra=ports + extra, env=f'    FLAGS: "{flags}"\n')
    return mesh_dir(tmp, workload("client", "{SLEEPER}", ports=False), web), flags


def _restarted(mesh: RunningMesh, pid: int) -> None:
    wait_for(lambda: recorded(mesh.state_dir)["web-0.default"]["pid"] != pid, timeout=60,
             what="the app to be restarted")
    wait_for(lambda: "app web-0.default ready again" in mesh.output(), timeout=60, what="the app ready again")


def test_exec_probes_run_with_the_apps_environment_and_directory(tmp_path: pathlib.Path) -> None:
    # readiness reads $FLAGS (the app's env); liveness a path relative to the config directory (the app's cwd)
    probes = ("  readinessProbe:\n    exec:\n      command: [sh, -c, 'test ! -e \"$FLAGS/unready\"']\n"
              "    periodSeconds: 1\n    failureThreshold: 1\n"
              "  livenessProbe:\n    exec:\n      command: [sh, -c, 'test ! -e ../flags/sick']\n"
              "    periodSeconds: 1\n    failureThreshold: 2\n")
    d, flags = _mesh(tmp_path, "{APP}", probes, ports="  ports:\n  - name: http\n    containerPort: 8000\n")
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        wait_for(lambda: f"{web_ip}:8000" in eds_hosts(client_ip, WEB_CLUSTER), timeout=30, what="web's endpoint")
        # not rewritten: the agent has no /app-health path for an exec probe (Istio leaves it to the kubelet)
        assert get(f"http://{web_ip}:15020/app-health/web/readyz")[0] == 404
        (flags / "unready").write_text("")
        wait_for(lambda: f"{web_ip}:8000" not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint to leave while the exec readiness probe fails")
        assert "web-0 is not ready: app readiness probe: exec sh -c" in mesh.output()
        assert "exit status 1" in mesh.output()
        (flags / "unready").unlink()
        wait_for(lambda: f"{web_ip}:8000" in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint back once the exec readiness probe passes")

        app = recorded(mesh.state_dir)["web-0.default"]
        (flags / "sick").write_text("")
        wait_for(lambda: "liveness probe failed 2 times in a row" in mesh.output(), timeout=30,
                 what="the exec liveness failure")
        (flags / "sick").unlink()
        _restarted(mesh, app["pid"])


def test_grpc_probes_are_rewritten_to_the_agent_and_check_grpc_health(tmp_path: pathlib.Path) -> None:
    app = tmp_path / "grpc_app.py"
    app.write_text(GRPC_APP)
    probes = ("  readinessProbe:\n    grpc:\n      port: 9000\n    periodSeconds: 1\n    failureThreshold: 1\n"
              "  livenessProbe:\n    grpc:\n      port: 9000\n      service: liveness\n"
              "    periodSeconds: 1\n    failureThreshold: 2\n")
    d, flags = _mesh(tmp_path, str(app), probes)
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        wait_for(lambda: f"{web_ip}:8000" in eds_hosts(client_ip, WEB_CLUSTER), timeout=30, what="web's endpoint")
        # Istio's rewrite: the kubelet's gRPC probe becomes an HTTP GET of the agent, which runs Health/Check
        assert get(f"http://{web_ip}:15020/app-health/web/readyz") == (200, "")
        assert get(f"http://{web_ip}:15020/app-health/web/livez") == (200, "")
        (flags / "unready").write_text("")
        assert wait_for(lambda: get(f"http://{web_ip}:15020/app-health/web/readyz")[0] == 500, timeout=10)
        assert get(f"http://{web_ip}:15021/healthz/ready")[0] == 503  # the sidecar's readiness includes it
        wait_for(lambda: f"{web_ip}:8000" not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint to leave while the app answers NOT_SERVING")
        (flags / "unready").unlink()
        wait_for(lambda: f"{web_ip}:8000" in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint back once the app answers SERVING")

        pid = recorded(mesh.state_dir)["web-0.default"]["pid"]
        (flags / "sick").write_text("")
        assert wait_for(lambda: get(f"http://{web_ip}:15020/app-health/web/livez")[0] == 500, timeout=10)
        wait_for(lambda: "liveness probe failed 2 times in a row" in mesh.output(), timeout=30,
                 what="the grpc liveness failure")
        assert "is NOT_SERVING" in mesh.output()
        (flags / "sick").unlink()
        _restarted(mesh, pid)
