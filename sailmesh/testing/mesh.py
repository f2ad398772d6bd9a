"""Run a whole embedded mesh (`sailmesh up`/`demo`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from sailmesh.platform import ready
from sailmesh.testing.waiting import DeadlineExceeded, random_loopback_block, wait_for


class MeshExited(AssertionError):
    """`sailmesh up`/`demo` exited before its workloads were ready."""


class RunningMesh:
    """One embedded mesh on its own loopback block and free ports; stop() (or the context) tears it down."""

    def __init__(self, state_dir: str, dirs: Sequence[str] = (), demo: bool = False, ready_timeout: float = 120.0,
                 extra: Sequence[str] = (), egress_gateway: bool = False) -> None:
        block = random_loopback_block()
        self.state_dir = state_dir
        self.gateway_ip = f"{block}.1"
        self.egress_gateway_ip = f"{block}.254" if egress_gateway else ""  # istio-egressgateway's address
        self.base_ip = f"{block}.2"
        self.log_path = os.path.join(state_dir, "supervisor.log")
        os.makedirs(state_dir, exist_ok=True)
        self._args = ["demo"] if demo else ["up", *[a for d in dirs for a in ("-f", d)]]
        self._args += ["--state-dir", state_dir, "--base-ip", self.base_ip, "--gateway-ip", self.gateway_ip, *extra]
        if egress_gateway:
            self._args += ["--egress-gateway-ip", self.egress_gateway_ip]
        # every control-plane port 0: the control plane binds free ones itself (no window for another process to
        # take a port picked here), and they are read back from its ready record once the mesh is up
        ports = ["--xds-port", "0", "--http-port", "0", "--xds-tls-port", "0", "--ca-port", "0"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "sailmesh", *self._args, *ports], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        record = ready.read(os.path.join(state_dir, "controlplane"))
        if record is None:
            self.stop()
            raise MeshExited(f"the mesh is ready but its control plane left no ready record:\n{self.output()}")
        self.http_port, self.xds_tls_port = record.ports["http"], record.ports["xdsTls"]
        self.ca_port, self.xds_port = record.ports["ca"], record.ports["xds"]  # xds: 0 without --xds-plaintext
        self.dns_port = record.ports.get("dns", 0)  # the mesh DNS (UDP and TCP), as bound
        self.api_url = record.api_url

    @property
    def api_headers(self) -> dict[str, str]:
        """The control plane's API token (0600 in its state dir), as the CLI sends it."""
        with open(os.path.join(self.state_dir, "controlplane", "api-token"), encoding="utf-8") as fh:
            return {"Authorization": f"Bearer {fh.read().strip()}"}

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def _wait_ready(self, timeout: float) -> None:
        """Until the mesh says its workloads are ready; MeshExited at once if it exits first (a refused start), and
        DeadlineExceeded after `timeout` seconds, each with its output."""
        deadline = time.monotonic() + timeout
        while "are ready" not in self.output():
            if self.proc.poll() is not None:
                raise MeshExited(f"sailmesh exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"timed out after {timeout}s waiting for the mesh to be ready:\n"
                                       f"{self.output()[-4000:]}")
            time.sleep(0.1)

    def gateway_url(self, port: int = 8080) -> str:
        return f"http://{self.gateway_ip}:{port}"

    def cli(self, *args: str, check: bool = False, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a `sailmesh` verb against this mesh."""
        r = subprocess.run([sys.executable, "-m", "sailmesh", *args, "--state-dir", self.state_dir],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"sailmesh {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def apply_text(self, folder: str | os.PathLike[str], name: str, text: str) -> None:
        """Write `text` to folder/name.yaml and `sailmesh apply -f` it (an error fails the caller's test)."""
        path = os.path.join(folder, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        self.cli("apply", "-f", path, check=True)

    def delete_text(self, folder: str | os.PathLike[str], name: str) -> None:
        """`sailmesh delete -f` what apply_text(folder, name, ...) applied."""
        self.cli("delete", "-f", os.path.join(folder, f"{name}.yaml"), check=True)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Ctrl-C-equivalent stop; kills the whole process group if it does not finish in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_leftovers()
        self._log.close()
        return self.proc.returncode

    def _kill_leftovers(self) -> None:
        # Every child runs in its own session; find them through the state file's pids and kill what is left.
        import json

        path = os.path.join(self.state_dir, "mesh.json")
        pids: list[int] = []
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    pids = [p["pid"] for p in json.load(fh).get("processes", [])]
            except (OSError, ValueError, KeyError):
                pids = []
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def __enter__(self) -> RunningMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()




def httpbin_demo(state_dir: str, banner_timeout: float = 60.0) -> RunningMesh:
    """`sailmesh demo httpbin` (Istio's security tasks' set-up), once it printed `httpbin is up.`."""
    m = RunningMesh(state_dir, demo=True, extra=["httpbin"])
    try:
        wait_for(lambda: "httpbin is up." in m.output(), timeout=banner_timeout, what="the httpbin banner")
    except BaseException:
        m.stop()
        raise
    return m
