"""Issue 13, crashes: an app that exits leaves the mesh (its sidecar answers 503 on 15021, its endpoint leaves
every other proxy's EDS) and, restarted with back-off by its restartPolicy (Kubernetes': Always by default,
OnFailure, Never), comes back once it listens again."""

from __future__ import annotations

import os
import pathlib
import signal

from sailmesh.platform.state import pid_alive
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import eds_hosts, get, mesh_dir, recorded, state, workload

WEB_CLUSTER = "outbound|8000||web.default.svc.cluster.local::"
NEVER = workload("once", "{APP}", extra="  restartPolicy: Never\n")


def _ip(state_dir: str, name: str) -> str:
    return next(i["address"] for i in state(state_dir)["instances"] if i["name"] == name)


def test_a_killed_app_leaves_the_endpoints_and_returns_after_its_restart(tmp_path: pathlib.Path) -> None:
    d = mesh_dir(tmp_path, workload("client", "{SLEEPER}", ports=False), workload("web", "{APP}"), NEVER)
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        web_endpoint = f"{web_ip}:8000"
        assert wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=30)
        app = recorded(mesh.state_dir)["web-0.default"]

        os.killpg(app["pid"], signal.SIGKILL)
        # the sidecar is not ready while its app is down (the supervisor restarts it after a back-off of 1s)
        wait_for(lambda: get(f"http://{web_ip}:15021/healthz/ready")[0] == 503, timeout=30, what="sidecar 503")
        wait_for(lambda: web_endpoint not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint to leave the client's EDS")

        # restartPolicy Always (the default): a new app process, then ready, then back in the endpoints
        wait_for(lambda: recorded(mesh.state_dir)["web-0.default"]["pid"] != app["pid"], timeout=60,
                 what="the app to be restarted")
        wait_for(lambda: get(f"http://{web_ip}:15021/healthz/ready")[0] == 200, timeout=60, what="sidecar 200")
        wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=60,
                 what="the endpoint to return")
        assert "app web-0.default exited with code -9; restarting it" in mesh.output()
        assert "app web-0.default ready again" in mesh.output()

        # restartPolicy Never: stays down, and says so
        once = recorded(mesh.state_dir)["once-0.default"]
        os.killpg(once["pid"], signal.SIGKILL)
        wait_for(lambda: "restartPolicy Never: not restarting it" in mesh.output(), timeout=30)
        assert recorded(mesh.state_dir)["once-0.default"]["pid"] == once["pid"]
        assert not pid_alive(once["pid"])
        # a job-style workload's sidecar exits with its app, and is not restarted
        sidecar = recorded(mesh.state_dir)["once-0.default.sidecar"]
        wait_for(lambda: not pid_alive(sidecar["pid"]), timeout=30, what="the job's sidecar to exit")
        assert recorded(mesh.state_dir)["once-0.default.sidecar"]["pid"] == sidecar["pid"]


def test_a_failing_readiness_probe_takes_the_endpoint_out_until_it_passes(tmp_path: pathlib.Path) -> None:
    """Kubernetes' readinessProbe (httpGet on a named port, periodSeconds, failureThreshold), run the way Istio's
    rewritten probes run: straight to the app; the sidecar's 15021 includes it."""
    flag = tmp_path / "not-ready"
    probe = ("  readinessProbe:\n    httpGet:\n      path: /ready\n      port: http\n"
             "    periodSeconds: 1\n    failureThreshold: 1\n")
    web = workload("web", "{APP}", extra=probe, env=f'    NOT_READY_FILE: "{flag}"\n')
    d = mesh_dir(tmp_path, workload("client", "{SLEEPER}", ports=False), web)
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        web_endpoint = f"{web_ip}:8000"
        assert wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=30)
        flag.write_text("")
        wait_for(lambda: get(f"http://{web_ip}:15021/healthz/ready")[0] == 503, timeout=30, what="sidecar 503")
        wait_for(lambda: web_endpoint not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint to leave the client's EDS")
        assert "web-0 is not ready: app readiness probe" in mesh.output()
        flag.unlink()
        wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=30, what="the endpoint back")
        assert get(f"http://{web_ip}:15021/healthz/ready")[0] == 200


def test_the_app_starts_only_after_its_sidecar_is_ready(tmp_path: pathlib.Path) -> None:
    """Istio's holdApplicationUntilProxyStarts, on by default here: the app's first request through its sidecar
    (at start-up) already works. The app records whether its sidecar was ready when it started."""
    check = tmp_path / "check.py"
    out = tmp_path / "seen"
    check.write_text(
        "import os, urllib.request\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "try:\n"
        "    code = opener.open(f'http://{os.environ[\"HOST\"]}:15021/healthz/proxy-ready', timeout=5).status\n"
        "except Exception as e:\n"
        "    code = repr(e)\n"
        f"open({str(out)!r}, 'w').write(str(code))\n"
        "import time\n"
        "while True:\n"
        "    time.sleep(3600)\n")
    d = mesh_dir(tmp_path, workload("client", str(check), ports=False))
    with RunningMesh(str(tmp_path / "s"), dirs=[d]):
        assert wait_for(lambda: out.exists() and out.read_text(), timeout=30) == "200"


def test_a_killed_sidecar_takes_its_app_out_until_it_is_restarted(tmp_path: pathlib.Path) -> None:
    d = mesh_dir(tmp_path, workload("client", "{SLEEPER}", ports=False), workload("web", "{APP}"))
    with RunningMesh(str(tmp_path / "s"), dirs=[d]) as mesh:
        web_ip, client_ip = _ip(mesh.state_dir, "web-0"), _ip(mesh.state_dir, "client-0")
        web_endpoint = f"{web_ip}:8000"
        assert wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=30)
        sidecar = recorded(mesh.state_dir)["web-0.default.sidecar"]
        os.kill(sidecar["pid"], signal.SIGKILL)  # its Envoy dies with it (PR_SET_PDEATHSIG)
        wait_for(lambda: web_endpoint not in eds_hosts(client_ip, WEB_CLUSTER), timeout=30,
                 what="the endpoint to leave the client's EDS")
        wait_for(lambda: recorded(mesh.state_dir)["web-0.default.sidecar"]["pid"] != sidecar["pid"], timeout=60,
                 what="the sidecar to be restarted")
        wait_for(lambda: web_endpoint in eds_hosts(client_ip, WEB_CLUSTER), timeout=60, what="the endpoint back")
        assert get(f"http://{web_ip}:8000/")[0] == 200  # served through the new sidecar
        assert "agent web-0.default.sidecar ready again" in mesh.output()
