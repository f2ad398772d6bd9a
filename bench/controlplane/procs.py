"""The processes of a control-plane benchmark: the control plane itself and the client workers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import aiohttp

from bench.controlplane.errors import BenchError
from sailmesh.processes import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children: none here) from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """utime + stime per thread of a process, summed by thread name; the main thread (the event loop's in the
    control plane) is "main"."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as fh:
                text = fh.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = "main" if tid == str(pid) else text[text.index("(") + 1:text.rindex(")")]
        fields = text.rpartition(")")[2].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE


def env(root: str = ROOT) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


class ControlPlaneProc:
    """`sailmesh controlplane` as a subprocess (honest CPU and RSS figures), on free loopback ports."""

    def __init__(self, config_dir: str, workload_file: str, log_path: str, trace_path: str = "",
                 extra: Sequence[str] = (), python: str = "", root: str = "") -> None:
        self.xds_port = free_port()
        self.http_port = free_port()
        self.ca_port = free_port()
        self.log_path = log_path
        self.state_dir = log_path + ".state"  # the CA root and the API token (0600) of this run
        self._log = open(log_path, "wb")
        self.trace_path = trace_path
        cmd = ["bench.controlplane.trace"] if trace_path else ["sailmesh", "controlplane"]
        # root: another checkout's control plane (an A/B against e.g. `git archive main`), this harness driving it
        root = root or ROOT
        environ = env(root)
        if trace_path:
            environ["SAILMESH_BENCH_TRACE"] = trace_path
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", *cmd, "--config-dir", config_dir,
             "--workload-file", workload_file, "--xds-port", str(self.xds_port), "--http-port", str(self.http_port),
             "--xds-tls-port", "0", "--ca-port", str(self.ca_port), "--xds-plaintext", "--state-dir", self.state_dir,
             *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=environ, cwd=root, start_new_session=True)
        self.pid = self.proc.pid
        self.api = f"http://127.0.0.1:{self.http_port}"
        self.target = f"127.0.0.1:{self.xds_port}"

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(f"control plane exited with {self.proc.returncode}: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with s.get(self.api + "/ready") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise BenchError(f"control plane not ready in {timeout}s: {self.log_tail()}")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    @property
    def headers(self) -> dict[str, str]:
        """The control plane's API token (written 0600 into its state dir at start)."""
        with open(os.path.join(self.state_dir, "api-token"), encoding="utf-8") as fh:
            return {"Authorization": f"Bearer {fh.read().strip()}"}

    async def get(self, path: str) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.api + path, headers=self.headers) as r:
            return await r.text()

    async def apply(self, docs: list[dict]) -> None:
        body = {"documents": [{"file": "bench", "line": 0, "doc": d} for d in docs]}
        async with aiohttp.ClientSession() as s, s.post(self.api + "/api/v1/apply", json=body,
                                                            headers=self.headers) as r:
            text = await r.text()
            if r.status != 200:
                raise BenchError(f"apply failed: HTTP {r.status}: {text}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


_LIVE_WORKERS: set[int] = set()


@atexit.register
def _kill_workers() -> None:
    """Workers run in their own sessions: never leave one behind, even when the benchmark is interrupted."""
    for pid in list(_LIVE_WORKERS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _LIVE_WORKERS.clear()


class ClientWorker:
    """One process of lean ADS clients (bench/controlplane/clients.py), one command at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, stderr_path: str) -> ClientWorker:
        environ = env()
        # gRPC's threads' arenas held freed message buffers; the worker also trims after each connect and after a
        # wait that left it large (clients.py): the harness's memory, never the control plane's. (A fixed mmap
        # threshold cost the clients a page fault per page of every large response: not used.)
        environ.setdefault("MALLOC_ARENA_MAX", "2")
        with open(stderr_path, "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.controlplane.clients",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, env=environ, cwd=ROOT,
                limit=256 * 1024 * 1024, start_new_session=True)
        _LIVE_WORKERS.add(proc.pid)
        return cls(proc)

    async def call(self, cmd: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise BenchError(f"client worker exited ({self.proc.returncode}) during {cmd['cmd']}")
        return dict(json.loads(line))

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc.returncode is None:
            # a worker busy with another command (a connect that never syncs) cannot answer: then kill it
            with contextlib.suppress(BenchError, BrokenPipeError, ConnectionResetError, TimeoutError):
                await asyncio.wait_for(self.call({"cmd": "close"}), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        _LIVE_WORKERS.discard(self.proc.pid)
