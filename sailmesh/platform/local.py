"""The embedded platform: starts the control plane, an ingress gateway and local workloads as processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from sailmesh.api.parse import load_paths
from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.platform import state as mesh_state
from sailmesh.platform import workload_file
from sailmesh.platform.forwarder import Client, Forwarder, NameTable
from sailmesh.platform.workloads import Instance, app_env, instance_record, mesh_labels, plan, registry_workload
from sailmesh.processes import free_port
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL
from sailmesh.registry.services import service_from_kube
from sailmesh.settings import Settings

GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}


@dataclass
class MeshOptions:
    """How to run an embedded mesh."""

    config_dirs: Sequence[str]
    state_dir: str
    base_ip: str = "127.0.10.2"  # first workload address
    gateway_ip: str = "127.0.0.1"  # gateway listeners, admin and readiness bind here
    cp_host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014
    delta: bool = False
    ready_timeout: float = 60.0
    extra_agent_args: Sequence[str] = field(default_factory=tuple)
    xds_tls_port: int = 0  # ADS over mTLS (0 = a free port)
    ca_port: int = 0  # the CA's first-CSR port (0 = a free port)
    xds_plaintext: bool = False  # proxies use the plaintext loopback ADS port instead (debugging)
    min_cert_ttl_s: float = 60.0  # the CA's floor (tests lower it)
    cert_ttl_s: float = 0.0  # the lifetime agents ask for (0 = the CA's default, 24 h)


@dataclass
class _Proc:
    name: str
    role: str
    proc: asyncio.subprocess.Process
    log: str
    address: str = ""


class LocalMesh:
    """Owns every process of one embedded mesh; start() brings it up, stop() takes it down in order."""

    def __init__(self, opts: MeshOptions, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.settings = settings
        self.say = say
        self.procs: list[_Proc] = []
        self.instances: list[Instance] = []
        self.gateway_urls: list[str] = []
        self.logs_dir = os.path.join(opts.state_dir, "logs")
        self.workload_file = os.path.join(opts.state_dir, mesh_state.REGISTRY_FILE)
        self._stopping = False
        self._cp_argv: list[str] = []
        self.forwarder: Forwarder | None = None  # the plain proxy of workloads without a sidecar
        self.cp_state_dir = os.path.join(opts.state_dir, "controlplane")
        if not opts.xds_tls_port:
            opts.xds_tls_port = free_port()
        if not opts.ca_port:
            opts.ca_port = free_port()

    @property
    def api_url(self) -> str:
        return f"http://{self.opts.cp_host}:{self.opts.http_port}"

    @property
    def xds_address(self) -> str:
        if self.opts.xds_plaintext:
            return f"127.0.0.1:{self.opts.xds_port}"
        return f"{self.opts.cp_host}:{self.opts.xds_tls_port}"

    async def _spawn(self, name: str, role: str, argv: Sequence[str], env: dict[str, str], address: str = "") -> _Proc:
        os.makedirs(self.logs_dir, exist_ok=True)
        log = os.path.join(self.logs_dir, f"{name}.log")
        fh = open(log, "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=fh, stderr=fh, stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True
            )
        finally:
            fh.close()
        p = _Proc(name, role, proc, log, address)
        self.procs.append(p)
        return p

    def _sailmesh(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sailmesh", *args]

    def _save_state(self) -> None:
        mesh_state.MeshState(
            supervisor_pid=os.getpid(),
            api_url=self.api_url,
            api_token_file=self.api_token_file,
            xds_address=self.xds_address,
            config_dirs=[os.path.abspath(d) for d in self.opts.config_dirs],
            gateway_urls=self.gateway_urls,
            processes=[mesh_state.ProcessRecord(p.name, p.role, p.proc.pid, p.log, p.address) for p in self.procs],
            instances=[instance_record(i, self.settings.proxy.outbound) for i in self.instances],
        ).save(self.opts.state_dir)

    async def _wait_http(self, url: str, what: str, proc: _Proc | None = None) -> None:
        deadline = time.monotonic() + self.opts.ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2), trust_env=False) as s:
            while True:
                if proc is not None and proc.proc.returncode is not None:
                    raise PlatformError(f"{what} exited with code {proc.proc.returncode}; see {proc.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with s.get(url) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    log = f"; see {proc.log}" if proc else ""
                    raise PlatformError(f"{what} not ready after {self.opts.ready_timeout:.0f}s ({url}){log}")
                await asyncio.sleep(0.05)

    async def _wait_tcp(self, host: str, port: int, what: str, proc: _Proc) -> None:
        deadline = time.monotonic() + self.opts.ready_timeout
        while True:
            if proc.proc.returncode is not None:
                raise PlatformError(f"{what} exited with code {proc.proc.returncode}; see {proc.log}")
            try:
                _, w = await asyncio.open_connection(host, port)
                w.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise PlatformError(f"{what} is not listening on {host}:{port}; see {proc.log}") from None
                await asyncio.sleep(0.05)

    @property
    def api_token_file(self) -> str:
        return os.path.join(self.cp_state_dir, "api-token")

    async def _join_token_file(self, agent_dir: str, namespace: str, sa: str) -> str:
        """Ask the CA for a join token for (namespace, sa) and leave it 0600 in the agent's private dir."""
        with open(self.api_token_file, encoding="utf-8") as fh:
            api_token = fh.read().strip()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as s:
            async with s.post(f"{self.api_url}/api/v1/join-tokens", json={"namespace": namespace, "serviceAccount": sa},
                              headers={"Authorization": f"Bearer {api_token}"}) as r:
                body = await r.json()
                if r.status != 200:
                    raise PlatformError(f"the control plane refused a join token for {namespace}/{sa}: {body}")
        os.makedirs(agent_dir, mode=0o700, exist_ok=True)
        path = os.path.join(agent_dir, "join-token")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(body["token"])
        return path

    async def _agent_args(self, *, kind: str, ip: str, name: str, namespace: str, labels: dict[str, str], sa: str,
                          app_ports: dict[int, int]) -> list[str]:
        agent_dir = os.path.join(self.opts.state_dir, "proxies", f"{name}.{namespace}")
        args = [
            "agent", "--type", kind, "--ip", ip, "--name", name, "--namespace", namespace,
            "--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--service-account", sa, "--xds-address", self.xds_address,
            "--state-dir", agent_dir,
            "--ca-address", f"{self.opts.cp_host}:{self.opts.ca_port}",
            "--ca-root", os.path.join(self.cp_state_dir, "root-cert.pem"),
            "--token-file", await self._join_token_file(agent_dir, namespace, sa),
        ]
        if not self.opts.xds_plaintext:
            args.append("--xds-tls")
        if self.opts.cert_ttl_s:
            args += ["--cert-ttl", str(self.opts.cert_ttl_s)]
        if app_ports:
            args += ["--app-ports", ",".join(f"{k}:{v}" for k, v in sorted(app_ports.items()))]
        if self.opts.delta:
            args.append("--delta")
        return self._sailmesh(*args, *self.opts.extra_agent_args)

    async def start(self) -> None:
        """Start everything and wait until all of it is ready; on failure stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts = self.opts
        loaded = load_paths(opts.config_dirs)
        if loaded.errors:
            raise PlatformError("cannot read the mesh directory:\n  " + "\n  ".join(str(e) for e in loaded.errors))
        self.instances = plan(loaded.resources, opts.base_ip, free_port)
        os.makedirs(opts.state_dir, exist_ok=True)
        workload_file.write(self.workload_file, [registry_workload(i) for i in self.instances])
        env = dict(os.environ)

        self.say(f"starting control plane (xDS {self.xds_address}, API {self.api_url})")
        cp_args = ["controlplane", "--host", opts.cp_host, "--xds-port", str(opts.xds_port),
                   "--http-port", str(opts.http_port), "--workload-file", self.workload_file,
                   "--xds-tls-port", str(opts.xds_tls_port), "--state-dir", self.cp_state_dir,
                   "--min-cert-ttl", str(opts.min_cert_ttl_s), "--ca-port", str(opts.ca_port)]
        if opts.xds_plaintext:
            cp_args.append("--xds-plaintext")
        for d in opts.config_dirs:
            cp_args += ["--config-dir", d]
        self._cp_argv = self._sailmesh(*cp_args)
        cp = await self._spawn("controlplane", "controlplane", self._cp_argv, env, self.api_url)
        self._save_state()
        await self._wait_http(f"{self.api_url}/ready", "control plane", cp)
        self.say("  control plane ready")

        self.say(f"starting ingress gateway on {opts.gateway_ip}")
        gw = await self._spawn(
            "istio-ingressgateway", "gateway",
            await self._agent_args(kind="router", ip=opts.gateway_ip, name="istio-ingressgateway-0",
                             namespace="istio-system", labels={**GATEWAY_LABELS, TLS_MODE_LABEL: TLS_MODE_ISTIO},
                             sa="istio-ingressgateway",
                             app_ports={}),
            env, opts.gateway_ip,
        )
        waits = [self._wait_http(f"http://{opts.gateway_ip}:{self.settings.proxy.health}/healthz/ready",
                                 "ingress gateway", gw)]
        await self._start_forwarder(loaded.resources)
        for inst in self.instances:
            self.say(f"starting {inst.namespace}/{inst.name} on {inst.ip}" + (" with sidecar" if inst.sidecar else ""))
            app = await self._spawn(f"{inst.name}.{inst.namespace}", "app", inst.command,
                                    {**env, **app_env(inst, self.settings.proxy.outbound)}, inst.ip)
            for ap in inst.app_ports.values():
                waits.append(self._wait_tcp(inst.ip, ap, f"app {inst.name}", app))
            if inst.sidecar:
                agent = await self._spawn(
                    f"{inst.name}.{inst.namespace}.sidecar", "agent",
                    await self._agent_args(kind="sidecar", ip=inst.ip, name=inst.name, namespace=inst.namespace,
                                     labels=mesh_labels(inst), sa=inst.service_account,
                                     app_ports=dict(inst.app_ports)),
                    env, inst.ip,
                )
                waits.append(self._wait_http(f"http://{inst.ip}:{self.settings.proxy.health}/healthz/ready",
                                             f"sidecar of {inst.name}", agent))
        self._save_state()
        await asyncio.gather(*waits)
        self.say(f"all {len(self.instances)} workloads and the ingress gateway are ready")

    async def _start_forwarder(self, resources: Sequence[Resource]) -> None:
        """Workloads without a sidecar reach services through the plain forwarder on their own address."""
        outside = [i for i in self.instances if not i.sidecar]
        if not outside:
            return
        services = [service_from_kube(r, self.settings.mesh).service for r in resources if r.kind == "Service"]
        self.forwarder = Forwarder(NameTable(services, [registry_workload(i) for i in self.instances],
                                             self.settings.mesh.domain_suffix))
        for inst in outside:
            try:
                await self.forwarder.listen(Client(inst.ip, inst.namespace, inst.name), self.settings.proxy.outbound)
            except OSError as e:
                raise PlatformError(f"cannot start the forwarder of {inst.namespace}/{inst.name} on "
                                    f"{inst.ip}:{self.settings.proxy.outbound}: {e}") from e

    async def restart_controlplane_if_dead(self) -> bool:
        """Supervise the control plane: if it died, start it again (proxies keep their config meanwhile)."""
        cp = next((p for p in self.procs if p.role == "controlplane"), None)
        if self._stopping or cp is None or cp.proc.returncode is None:
            return False
        self.say(f"control plane exited with code {cp.proc.returncode}; restarting it (see {cp.log})")
        self.procs.remove(cp)
        new = await self._spawn("controlplane", "controlplane", self._cp_argv, dict(os.environ), self.api_url)
        self._save_state()
        await self._wait_http(f"{self.api_url}/ready", "control plane", new)
        self.say("  control plane ready again")
        return True

    def failed(self) -> list[str]:
        """Processes that exited while the mesh was supposed to be running."""
        return [f"{p.name} (exit {p.proc.returncode}, log {p.log})" for p in self.procs
                if p.proc.returncode is not None]

    async def stop(self, grace: float = 15.0) -> None:
        """Stop in order: sidecars drain first, then apps, the gateway, the control plane."""
        if self._stopping:
            return
        self._stopping = True
        for roles in (("agent",), ("app",), ("gateway",), ("controlplane",)):
            group = [p for p in self.procs if p.role in roles and p.proc.returncode is None]
            for p in group:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
            if group:
                await asyncio.wait([asyncio.create_task(p.proc.wait()) for p in group], timeout=grace)
                for p in group:
                    if p.proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(p.proc.pid, signal.SIGKILL)
                        await p.proc.wait()
            if roles == ("app",) and self.forwarder is not None:
                await self.forwarder.stop()
        mesh_state.remove(self.opts.state_dir)
