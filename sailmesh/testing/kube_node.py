"""A test-only node agent that plays kubelet (and scheduler) for one Node of a real API server.

There is no kubelet here. `KubeNode` registers a Node (Ready, with topology labels), binds unscheduled Pods to it,
gives each Pod an address from its block (127.x.y.z, or from the pod network below), runs the Pod's containers as
local processes (sample images map to the project's sample apps; a container whose command starts with `sailmesh`,
as the injected proxy's does, runs `python -m sailmesh ...`), and writes the Pod's status: podIP, phase,
conditions, container statuses. A deleted (terminating) Pod's processes are stopped and its object removed, as the
kubelet does.

As the kubelet's pod workers: each Pod starts in its own task (a Pod waiting for its ConfigMap does not hold up the
others), a failed start (an API error, a timeout on a loaded machine) stops what it started and is retried with a
back-off instead of leaving the Pod without processes, and no error stops the node's loop. Containers are spawned
through `setpriv --pdeathsig KILL` rather than a Python preexec_fn: this process runs gRPC, anyio and executor
threads, and Python code between fork and exec in a threaded process can deadlock the child, which would block the
event loop in Popen until the child execs.

EndpointSlices come from the real kube-controller-manager when the cluster runs it. The API server refuses
loopback addresses in EndpointSlices, so pods whose slices matter take their addresses from `POD_NETWORK`
(198.18.0.0/15, RFC 2544's benchmarking range, never routed on the internet), made local to this machine with a
`local` route on lo as 127/8 is (`routable_pod_block`; needs CAP_NET_ADMIN, else the caller skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
import logging
import random
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.informer import Informer, KubeResource, Obj
from sailmesh.processes import die_with_parent
from sailmesh.testing.kube_pod import ControlPlaneAddresses, plan_pod

log = logging.getLogger(__name__)

PODS = KubeResource("", "v1", "pods", "Pod")
# Sample images -> the project's sample apps (module, extra environment): the Bookinfo and httpbin images
# Istio's manifests name. Matched by substring of the image reference.
SAMPLE_IMAGES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("examples-bookinfo-productpage", "sailmesh.samples.bookinfo.productpage", {}),
    ("examples-bookinfo-details", "sailmesh.samples.bookinfo.details", {}),
    ("examples-bookinfo-ratings", "sailmesh.samples.bookinfo.ratings", {}),
    ("examples-bookinfo-reviews-v1", "sailmesh.samples.bookinfo.reviews",
     {"SERVICE_VERSION": "v1", "ENABLE_RATINGS": "false"}),
    ("examples-bookinfo-reviews-v2", "sailmesh.samples.bookinfo.reviews",
     {"SERVICE_VERSION": "v2", "ENABLE_RATINGS": "true", "STAR_COLOR": "black"}),
    ("examples-bookinfo-reviews-v3", "sailmesh.samples.bookinfo.reviews",
     {"SERVICE_VERSION": "v3", "ENABLE_RATINGS": "true", "STAR_COLOR": "red"}),
    ("httpbin", "sailmesh.samples.httpbin.app", {}),
    ("curl", "sailmesh.samples.httpbin.sleep", {}),
    ("sleep", "sailmesh.samples.httpbin.sleep", {}),
)


POD_NETWORK = "198.18.0.0/15"


def _is_local(address: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
            return True
        except OSError:
            return False


def routable_pod_block() -> str | None:
    """A random /24 prefix ("198.18.x" / "198.19.x") of POD_NETWORK for one test's pods, local to this machine:
    adds `ip route add local 198.18.0.0/15 dev lo table local` once when the range is not local yet. None when
    that is not possible (no `ip`, no CAP_NET_ADMIN)."""
    net = ipaddress.ip_network(POD_NETWORK)
    probe = str(net.network_address + 1)
    if not _is_local(probe):
        ip = shutil.which("ip")
        if ip is None:
            return None
        subprocess.run([ip, "route", "add", "local", POD_NETWORK, "dev", "lo", "table", "local"],
                       capture_output=True, check=False, timeout=10)
        if not _is_local(probe):
            return None
    third = random.randint(0, 2 * 256 - 1)
    return f"198.{18 + third // 256}.{third % 256}"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as resp:
            return int(resp.status) < 400
    except (OSError, ValueError):
        return False


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_command(container: Mapping[str, Any]) -> tuple[list[str], dict[str, str]] | None:
    """The local command (and extra env) for a container, or None when its image maps to nothing here."""
    command = [str(c) for c in container.get("command") or ()] + [str(a) for a in container.get("args") or ()]
    if command and command[0] == "sailmesh":
        return [sys.executable, "-m", "sailmesh", *command[1:]], {}
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]], {}
    image = str(container.get("image") or "")
    for fragment, module, env in SAMPLE_IMAGES:
        if fragment in image:
            return [sys.executable, "-m", module], dict(env)
    return None


START_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # between failed starts of one pod (then every 8 s), as a pod worker


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv when it can set the parent-death signal (then no preexec_fn is needed)."""
    exe = shutil.which("setpriv")
    if exe is None:
        return None
    done = subprocess.run([exe, "--pdeathsig", "KILL", "--", "true"], capture_output=True, timeout=10, check=False)
    return exe if done.returncode == 0 else None


def spawn(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a container's process (it dies with this process), its output appended to log_path."""
    setpriv = _setpriv()
    with log_path.open("ab") as out:
        if setpriv is not None:
            return subprocess.Popen([setpriv, "--pdeathsig", "KILL", "--", *command], env=dict(env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return subprocess.Popen(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


@dataclass
class _RunningPod:
    ip: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # containers whose image maps to nothing
    readiness: list[str] = field(default_factory=list)  # httpGet readiness probe URLs still to pass
    worker: asyncio.Task[None] | None = None  # starts the pod (with retries), then probes it Ready
    started: bool = False


@dataclass
class KubeNode:
    """One node: `run()` until cancelled (then every process it started is stopped)."""

    conn: KubeConnection
    name: str
    block: str  # "127.a.b": pod addresses are 127.a.b.2, .3, ...
    workdir: Path
    labels: dict[str, str] = field(default_factory=dict)  # e.g. topology.kubernetes.io/region
    control_plane: ControlPlaneAddresses | None = None  # where injected agents reach the control plane
    pods: dict[tuple[str, str], _RunningPod] = field(default_factory=dict)
    _next_host: int = 2
    _queue: asyncio.Queue[tuple[Obj, bool]] = field(default_factory=asyncio.Queue)  # (pod, deleted)

    # -- informer handler (called synchronously; work goes to the queue) ----------------------------
    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        present = set()
        for o in objs:
            meta = o.get("metadata") or {}
            present.add((str(meta.get("namespace")), str(meta.get("name"))))
            self._queue.put_nowait((o, False))
        for ns, name in set(self.pods) - present:  # deleted while no watch ran (a re-list after 410 Gone)
            self._queue.put_nowait(({"metadata": {"namespace": ns, "name": name}}, True))

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        self._queue.put_nowait((obj, False))

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        self._queue.put_nowait((obj, True))

    # -- main loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        for attempt in range(len(START_BACKOFF_S) + 1):
            try:
                await self.register()
                break
            except Exception as e:  # the API server busy or restarting: try again, as the kubelet does
                if attempt == len(START_BACKOFF_S):
                    raise
                log.warning("node %s: registering failed (%s: %s); retrying", self.name, type(e).__name__, e)
                await asyncio.sleep(START_BACKOFF_S[attempt])
        informer = Informer(self.conn, PODS, self)
        watch = asyncio.create_task(informer.run())
        try:
            while True:
                pod, deleted = await self._queue.get()
                try:
                    await self._sync(pod, deleted)
                except Exception as e:  # one pod's trouble never stops the node
                    log.warning("node %s: %s: %s", self.name, type(e).__name__, e)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            workers = [r.worker for r in self.pods.values() if r.worker is not None]
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.stop_all()

    async def register(self) -> None:
        """Create (or update) the Node object and mark it Ready."""
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name, **self.labels}}}
        try:
            await self.conn.send_json("POST", "/api/v1/nodes", body)
        except KubeApiError as e:
            if e.code != 409:
                raise
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "sailmesh test node agent", "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": "sailmesh-test", "containerRuntimeVersion": "local-processes",
                         "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "kernelVersion": "",
                         "kubeProxyVersion": "", "machineID": "", "osImage": "", "systemUUID": ""},
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}
        await self.conn.send_json("PATCH", f"/api/v1/nodes/{self.name}/status", status,
                                  "application/strategic-merge-patch+json")

    async def _sync(self, pod: Obj, deleted: bool) -> None:
        meta = pod.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if deleted or meta.get("deletionTimestamp"):
            running = self.pods.get((ns, name))
            if running is not None and running.worker is not None:  # a start in progress stops first
                running.worker.cancel()
                await asyncio.gather(running.worker, return_exceptions=True)
            await asyncio.to_thread(self._stop, (ns, name))
            if not deleted and node == self.name:
                # the kubelet's last word: the containers stopped, remove the object now
                await self.conn.send_json("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                                          {"gracePeriodSeconds": 0})
            return
        if not node:
            await self.conn.send_json("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.name}})
            return
        if node != self.name or (ns, name) in self.pods:
            return
        running = _RunningPod(self._address())
        self.pods[(ns, name)] = running
        running.worker = asyncio.create_task(self._work(ns, name, pod, running))

    async def _work(self, ns: str, name: str, pod: Obj, running: _RunningPod) -> None:
        """Start the pod (a failed attempt stops what it started and is retried after a back-off), write its
        status, then probe it Ready."""
        attempt = 0
        while not running.started:
            try:
                await self._start(ns, name, pod, running)
                running.started = True
            except Exception as e:
                delay = START_BACKOFF_S[min(attempt, len(START_BACKOFF_S) - 1)]
                log.warning("node %s: pod %s/%s did not start (%s: %s); retrying in %.1fs", self.name, ns, name,
                            type(e).__name__, e, delay)
                await asyncio.to_thread(_stop_procs, running.procs)
                running.procs.clear()
                attempt += 1
                await asyncio.sleep(delay)
        await self._write_status_retrying(ns, name, pod, running)
        if running.readiness and not running.missing:
            await self._probe(ns, name, pod, running)

    def _address(self) -> str:
        ip = f"{self.block}.{self._next_host}"
        self._next_host += 1
        return ip

    async def _start(self, ns: str, name: str, pod: Obj, running: _RunningPod) -> None:
        folder = self.workdir / "pods" / ns / name
        folder.mkdir(parents=True, exist_ok=True)
        plan = await plan_pod(self.conn, pod, running.ip, folder, container_command, self.control_plane)
        running.missing = plan.missing
        running.readiness = plan.readiness
        for c in plan.containers:
            running.procs[c.name] = spawn(c.command, c.env, folder / f"{c.name}.log")
            log.info("node %s: pod %s/%s container %s: %s", self.name, ns, name, c.name, " ".join(c.command))

    async def _probe(self, ns: str, name: str, pod: Obj, running: _RunningPod) -> None:
        """Poll the readiness probes (httpGet) until each passes once, then write the pod Ready (the write retried:
        a pod never written Ready would look like a hang to whoever waits for it)."""
        while running.readiness:
            url = running.readiness[0]
            if await asyncio.to_thread(_http_ok, url):
                running.readiness.pop(0)
            else:
                await asyncio.sleep(0.3)
        await self._write_status_retrying(ns, name, pod, running)

    async def _write_status_retrying(self, ns: str, name: str, pod: Obj, running: _RunningPod) -> None:
        for delay in (*START_BACKOFF_S, None):
            try:
                await self._write_status(ns, name, pod, running)
                return
            except Exception as e:
                log.warning("node %s: pod %s/%s status not written (%s: %s)%s", self.name, ns, name,
                            type(e).__name__, e, "; retrying" if delay is not None else "")
                if delay is None:
                    return
                await asyncio.sleep(delay)

    async def _write_status(self, ns: str, name: str, pod: Obj, running: _RunningPod) -> None:
        ready = "False" if running.missing or running.readiness else "True"
        now = _now()
        conds = [{"type": t, "status": s, "lastTransitionTime": now} for t, s in (
            ("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", ready), ("Ready", ready))]
        statuses = []
        for c in (pod.get("spec") or {}).get("containers") or ():
            cname = str(c.get("name"))
            ok = cname in running.procs
            statuses.append({"name": cname, "image": str(c.get("image") or ""), "imageID": "", "ready": ok,
                             "restartCount": 0, "started": ok,
                             "state": {"running": {"startedAt": now}} if ok else
                             {"waiting": {"reason": "ErrImagePull",
                                          "message": "no local program for this image (sailmesh test node)"}}})
        status = {"status": {"phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                             "podIP": running.ip, "podIPs": [{"ip": running.ip}], "startTime": now,
                             "conditions": conds, "containerStatuses": statuses}}
        await self.conn.send_json("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", status,
                                  "application/strategic-merge-patch+json")

    def _stop(self, key: tuple[str, str]) -> None:
        running = self.pods.pop(key, None)
        if running is not None:
            _stop_procs(running.procs)

    def stop_all(self) -> None:
        """Stop every container process this node started."""
        for key in list(self.pods):
            self._stop(key)


def _stop_procs(procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then SIGKILL what is still running after 5 s (the kubelet's grace, shortened)."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
