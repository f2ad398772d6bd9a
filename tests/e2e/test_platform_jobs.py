"""Issue 13, lifecycle: a job-style workload's sidecar exits with it and is not restarted (Kubernetes' restartPolicy
Never / OnFailure after exit 0 covers every container of the pod; the app may also ask its sidecar to quit first,
Istio's POST /quitquitquit on 15020), and `sailmesh down` drains in-flight requests before it stops the apps."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

from sailmesh.platform.state import pid_alive
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import get, mesh_dir, recorded, state, workload

JOB = '''\
import os, sys, time, urllib.error, urllib.request
via_sidecar = urllib.request.build_opener(urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]}))
deadline = time.time() + 60
while True:
    try:
        status = via_sidecar.open("http://web.default.svc.cluster.local:8000/", timeout=5).status
        if status == 200:
            break
    except Exception as e:
        status = repr(e)
    if time.time() > deadline:
        print("job failed:", status, flush=True)
        sys.exit(1)
    time.sleep(0.2)
print("job got", status, flush=True)
if os.environ.get("QUIT"):
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://{os.environ['HOST']}:15020/quitquitquit", method="POST")
    print("quitquitquit:", direct.open(req, timeout=5).status, flush=True)
    while time.time() < deadline:  # exit once the sidecar is gone: its exit is seen first
        try:
            direct.open(f"http://{os.environ['HOST']}:15021/healthz/ready", timeout=1)
        except urllib.error.HTTPError:
            pass
        except OSError:
            break
        time.sleep(0.1)
    # the agent process exits after its health port closed (Envoy, DNS, SDS stop first): seconds on a busy machine.
    # The platform must see the sidecar exit before this app's own; nothing waits for the app's exit, so be generous
    time.sleep(30)
'''

SLOW_APP = '''\
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, flush=True)
        if self.path == "/slow":
            time.sleep(3)
        self.send_response(200); self.end_headers(); self.wfile.write(b"done " + self.path.encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'''


def _ip(state_dir: str, name: str) -> str:
    return next(i["address"] for i in state(state_dir)["instances"] if i["name"] == name)


def test_a_finished_jobs_sidecar_exits_and_is_not_restarted(tmp_path: pathlib.Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    d = mesh_dir(tmp_path, workload("web", "{APP}"),
                 workload("job", str(job), ports=False, extra="  restartPolicy: OnFailure\n"),
                 workload("quitter", str(job), ports=False, extra="  restartPolicy: Never\n", env='    QUIT: "1"\n'))
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip = _ip(mesh.state_dir, "web-0")
        # OnFailure, exit 0: the app is done; the platform stops its sidecar (which drains) and restarts neither
        wait_for(lambda: "app job-0.default exited with code 0; restartPolicy OnFailure: not restarting it"
                 in mesh.output(), timeout=60, what="the job to finish")
        # Never: the app told its sidecar to quit (Istio's /quitquitquit), then exited 0
        wait_for(lambda: "sidecar quitter-0.default.sidecar exited with code 0; restartPolicy Never: not restarting it"
                 in mesh.output(), timeout=60, what="the quitter's sidecar to exit")
        for name in ("job-0.default", "quitter-0.default"):
            with open(recorded(mesh.state_dir)[name]["log"], encoding="utf-8") as fh:
                assert "job got 200" in fh.read()
            sidecar = recorded(mesh.state_dir)[f"{name}.sidecar"]
            wait_for(lambda pid=sidecar["pid"]: not pid_alive(pid), timeout=30, what=f"{name}'s sidecar to exit")
            assert f"agent {name}.sidecar ready again" not in mesh.output()
            assert recorded(mesh.state_dir)[f"{name}.sidecar"]["pid"] == sidecar["pid"]  # never restarted
        assert get(f"http://{web_ip}:8000/")[0] == 200  # the rest of the mesh goes on


def test_down_drains_a_request_in_flight_before_it_stops_the_app(tmp_path: pathlib.Path) -> None:
    app = tmp_path / "slow.py"
    app.write_text(SLOW_APP)
    d = mesh_dir(tmp_path, workload("web", str(app)))
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip = _ip(mesh.state_dir, "web-0")
        log = recorded(mesh.state_dir)["web-0.default"]["log"]
        result: list[tuple[int, str]] = []
        # through web's sidecar (its inbound listener on containerPort 8000)
        t = threading.Thread(target=lambda: result.append(get(f"http://{web_ip}:8000/slow")))
        t.start()
        wait_for(lambda: "GET /slow" in pathlib.Path(log).read_text(), timeout=30, what="the slow request to arrive")
        down = subprocess.run([sys.executable, "-m", "sailmesh", "down", "--state-dir", mesh.state_dir],
                              capture_output=True, text=True, timeout=120)
        t.join(timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        # the sidecars drained (this request answered in full) before the apps were stopped
        assert result == [(200, "done /slow")]
