"""`sailmesh controlplane --kubeconfig` started before its API server answers waits for it, as istiod does (issue
14): it retries with back-off, logs what it waits for, is not ready until every first list has answered, and a
SIGTERM while it waits ends it cleanly. Earlier it gave up after 30 s ("not listed within 30s").

The "API server that is not started yet" is the cluster's API server behind a TCP forwarder the test controls:
until the forwarder listens, its port refuses connections exactly as a kube-apiserver that has not started does;
then it passes the bytes through (tests/e2e/kube_service_lb.py; TLS end to end: the server's certificate names
127.0.0.1, any port). This keeps
the module's shared cluster fixture as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.processes import die_with_parent, free_port
from sailmesh.testing.kube_cluster import KubeCluster
from sailmesh.testing.waiting import await_for
from tests.e2e import kube_support as ks
from tests.e2e.kube_service_lb import forwarding

pytestmark = pytest.mark.e2e
kube = pytest.fixture(scope="module", name="kube")(ks.module_cluster)
OLD_LIMIT_S = 30.0  # what the control plane gave the API server before it waited


def later_kubeconfig(kube: KubeCluster, path: pathlib.Path, port: int) -> pathlib.Path:
    """The cluster's kubeconfig, its server moved to 127.0.0.1:port (same CA, same client certificate)."""
    cfg = json.loads(kube.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def controlplane(kubeconfig: pathlib.Path, workdir: pathlib.Path, name: str) -> Iterator[tuple[
        subprocess.Popen[bytes], int, pathlib.Path]]:
    http = free_port()
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "sailmesh", "controlplane", "--kubeconfig", str(kubeconfig), "--http-port",
           str(http), "--xds-tls-port", "0", "--ca-port", "0", "--webhook-port", "0",
           "--state-dir", str(workdir / f"{name}-state"), "--leader-lease-seconds", "3"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        yield proc, http, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def _logged(log: pathlib.Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


@pytest.mark.timeout(600)
async def test_controlplane_started_before_the_api_server_waits_and_is_ready_once_it_answers(
        kube: KubeCluster, tmp_path: pathlib.Path) -> None:
    port = free_port()
    config = later_kubeconfig(kube, tmp_path / "kubeconfig", port)
    api_port = int(kube.server.rsplit(":", 1)[1])
    waiting = "waiting for the Kubernetes API server"
    with controlplane(config, tmp_path, "cp") as (proc, http, log), \
            controlplane(config, tmp_path, "cp-stopped") as (stopped, _, stopped_log):
        started = time.monotonic()
        await await_for(lambda: _logged(log, waiting), timeout=60, what="the control plane says what it waits for")

        # a SIGTERM while waiting ends the wait and the process, cleanly
        await await_for(lambda: _logged(stopped_log, waiting), timeout=60, what="the second one waits too")
        stopped.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(stopped.wait, 30) == 0, stopped_log.read_text(errors="replace")[-2000:]

        # past the old 30 s limit it still waits, and is not ready
        while time.monotonic() - started < OLD_LIMIT_S + 5:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert not await asyncio.to_thread(ready, http)
            await asyncio.sleep(1.0)
        text = log.read_text(errors="replace")
        assert "not listed yet: " in text and "services (" in text, text[-3000:]

        # the API server "starts": the control plane lists everything and becomes ready
        async with forwarding(port, [api_port]):
            await await_for(lambda: asyncio.to_thread(ready, http), timeout=120, interval=0.5,
                            what="the control plane ready once the API server answers")
            assert proc.poll() is None
            assert "Kubernetes: " in log.read_text(errors="replace")
            # and it serves the cluster: a Service created now is in its registry
            await ks.kubectl(kube, "create", "namespace", "kt-wait", check=False)
            await ks.kubectl(kube, "apply", "-f", "-", input=ks.web_service("kt-wait"))
            token = (tmp_path / "cp-state" / "api-token").read_text().strip()

            def has_web() -> bool:
                req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/resources?kind=Service&namespace=kt-wait",
                                             headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return '"web"' in resp.read().decode()

            await await_for(lambda: asyncio.to_thread(has_web), timeout=60, what="the Service in its registry")
