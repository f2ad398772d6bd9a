"""The reliability suite's mesh and traffic: `client` (a sidecar the test sends through, as an app would with
HTTP_PROXY) and `web` (two replicas behind their sidecars, a VirtualService whose response header `x-route` tells
which config served a request); Traffic counts every request's outcome while a test breaks things."""

from __future__ import annotations

import os
import pathlib
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from sailmesh.platform.state import pid_alive
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import mesh_dir, recorded, state, workload

URL = "http://web.default.svc.cluster.local:8000/"
MIB = 1024 * 1024


def virtual_service(route: str) -> str:
    """web's VirtualService: every response carries `x-route: <route>` (which config version served it)."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: [web]
  http:
  - headers:
      response:
        set:
          x-route: "{route}"
    route:
    - destination:
        host: web
"""


def start_mesh(tmp: pathlib.Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> tuple[RunningMesh, pathlib.Path]:
    """The mesh, and the VirtualService file in its watched directory (route "v1")."""
    d = pathlib.Path(mesh_dir(tmp, workload("client", "{SLEEPER}", ports=False),
                              workload("web", "{APP}", extra=f"  replicas: {replicas}\n")))
    (d / "vs.yaml").write_text(virtual_service("v1"))
    return RunningMesh(str(tmp / "s"), dirs=[str(d)], extra=extra), d / "vs.yaml"


def address(mesh: RunningMesh, name: str) -> str:
    return str(next(i["address"] for i in state(mesh.state_dir)["instances"] if i["name"] == name))


@dataclass
class Traffic:
    """Closed-loop GETs of web through the client's sidecar from `threads` threads, until stop()."""

    proxy: str  # http://<client ip>:15001
    threads: int = 2
    pause_s: float = 0.01  # between one thread's requests: steady traffic at a modest CPU cost
    ok: int = 0
    routes: Counter[str] = field(default_factory=Counter)  # x-route values of the 200s
    refused: list[float] = field(default_factory=list)  # the client's own sidecar refused the connection
    failures: list[tuple[float, str]] = field(default_factory=list)  # anything else: (time, what)
    last_route: str = ""
    first_seen: dict[str, float] = field(default_factory=dict)  # route -> time.monotonic() of its first 200
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _one(self, opener: urllib.request.OpenerDirector) -> None:
        now = time.monotonic()
        try:
            with opener.open(URL, timeout=10) as r:
                r.read()
                route = r.headers.get("x-route", "")
            with self._lock:
                self.ok += 1
                self.routes[route] += 1
                self.last_route = route
                self.first_seen.setdefault(route, time.monotonic())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:200]
            with self._lock:
                self.failures.append((now, f"HTTP {e.code}: {body}"))
        except urllib.error.URLError as e:
            with self._lock:
                if isinstance(e.reason, ConnectionRefusedError):
                    self.refused.append(now)
                else:
                    self.failures.append((now, repr(e.reason)))
        except OSError as e:  # a reset or timeout after the proxy accepted the request
            with self._lock:
                self.failures.append((now, repr(e)))

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.proxy}))
        while not self._stop.is_set():
            self._one(opener)
            self._stop.wait(self.pause_s)

    def wait_requests(self, n: int, timeout: float = 30.0) -> None:
        """Until n more requests succeeded (traffic flows)."""
        target = self.ok + n
        wait_for(lambda: self.ok >= target, timeout=timeout, what=f"{n} more successful requests")

    def wait_route(self, route: str, timeout: float = 30.0) -> None:
        """Until successful responses carry x-route: route."""
        wait_for(lambda: self.last_route == route, timeout=timeout, what=f"responses with x-route {route}")

    def stop(self) -> Traffic:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        return self

    def summary(self) -> str:
        routes = dict(self.routes) if len(self.routes) <= 6 else f"{len(self.routes)} distinct"
        return (f"{self.ok} ok, {len(self.refused)} refused by the client's own sidecar, "
                f"{len(self.failures)} failed; routes {routes}; first failures {self.failures[:5]}")


def report(name: str, traffic: Traffic) -> None:
    """Print the request counts (pytest -s, or the captured output of a failure) and append them to
    $SAILMESH_RELIABILITY_REPORT when set (docs/reliability.md quotes these figures)."""
    line = f"{name}: {traffic.summary()}"
    print(line)
    path = os.environ.get("SAILMESH_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def restarts(mesh: RunningMesh, role: str, name: str) -> int:
    """How often the platform said `name` is ready again after a restart."""
    return mesh.output().count(f"{role} {name} ready again")


def ready_again(mesh: RunningMesh, role: str, name: str, old_pid: int, before: int, timeout: float = 60.0) -> None:
    """Until `name` (pid old_pid) exited, the platform restarted it and said so (`before`: restarts(...) earlier)."""
    wait_for(lambda: not pid_alive(old_pid), timeout=timeout, what=f"{name} (pid {old_pid}) to exit")
    wait_for(lambda: recorded(mesh.state_dir)[name]["pid"] != old_pid, timeout=timeout, what=f"{name} restarted")
    wait_for(lambda: restarts(mesh, role, name) > before, timeout=timeout, what=f"{role} {name} ready again")


def rss(pid: int) -> int:
    """Resident set size in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def grows_without_bound(samples: list[int]) -> bool:
    """The last third's median above the middle third's by more than max(15 %, 24 MiB)."""
    third = len(samples) // 3
    middle, last = statistics.median(samples[third:2 * third]), statistics.median(samples[2 * third:])
    return last - middle > max(0.15 * middle, 24 * MIB)
