"""The embedded platform: starts the control plane, an ingress gateway and local workloads as processes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.platform import egress, listenfds, proxyconfig, ready, workload_file
from sailmesh.platform import state as mesh_state
from sailmesh.platform.forwarder import Client, Forwarder, NameTable
from sailmesh.platform.gateways import GatewayDeployments, terminate
from sailmesh.platform.kubelet import AppProber, Hooks, startup_key
from sailmesh.platform.portplan import GATEWAY_LABELS, MeshOptions, load_and_plan, mesh_ports, planned_ports
from sailmesh.platform.ports import Port, check_free
from sailmesh.platform.restart import log_tail, should_restart
from sailmesh.platform.stop import STOP_ORDER, stop_signal
from sailmesh.platform.workloads import Instance, app_env, instance_record, mesh_labels, registry_workload
from sailmesh.processes import PID_HEADER, die_with_parent, proc_cmdline, proc_start_time
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL
from sailmesh.registry.services import service_from_kube
from sailmesh.settings import Settings

# what takes an instance out of the endpoints: its app or sidecar is down, its readiness probe fails, its startup
# probe has not passed, its sidecar drains
PARTS = ("", ".sidecar", ".probe", ".startup", ".sidecar.drain")
# a sidecar that goes away while the mesh runs on drains at least this long, time for its endpoint to leave the
# other proxies before it closes (Istio's MINIMUM_DRAIN_DURATION, 5 s there); 1 s was too short for a loaded 2-core
# machine (CI: a client's retries found no live endpoint 1.2 s after a replica's SIGTERM). Stopping the whole mesh
# skips it (platform.stop.stop_signal).
MIN_DRAIN_S = 2.5
DRAIN_POLL_S = 0.1
KILL_GRACE_S = 30.0  # a Pod's default terminationGracePeriodSeconds: SIGTERM, then SIGKILL after it


@dataclass
class _Proc:
    name: str
    role: str
    proc: asyncio.subprocess.Process
    log: str
    address: str = ""
    argv: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    start_time: int = 0  # /proc/<pid>/stat field 22: with the pid, names this process for good
    started: float = 0.0  # time.monotonic() at spawn
    failures: int = 0  # consecutive quick exits (see BackOff)
    instance: Instance | None = None  # the workload instance an app or sidecar belongs to
    cwd: str | None = None


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
        self._down: set[str] = set()  # apps and sidecars not running/ready: their instance leaves the endpoints
        self._watchers: set[asyncio.Task[None]] = set()
        self._retired: set[str] = set()  # processes stopped on purpose while the mesh runs (not restarted)
        self.fatal = asyncio.Event()  # set when the mesh cannot go on (the control plane crash-loops)
        self.fatal_reason = ""
        self.forwarder: Forwarder | None = None  # the plain proxy of workloads without a sidecar
        self.cp_state_dir = os.path.join(opts.state_dir, "controlplane")
        self.fetch_proxy_defaults = proxyconfig.fetch  # the control plane's ProxyConfigs + mesh default (tests count)
        self.app_ports = listenfds.PortReservations()  # the apps' ports, held from planning until their app starts

    @property
    def api_url(self) -> str:
        return f"http://{self.opts.cp_host}:{self.opts.http_port}"

    @property
    def xds_address(self) -> str:
        if self.opts.xds_plaintext:
            return f"127.0.0.1:{self.opts.xds_port}"
        return f"{self.opts.cp_host}:{self.opts.xds_tls_port}"

    async def _spawn(self, name: str, role: str, argv: Sequence[str], env: dict[str, str], address: str = "",
                     cwd: str | None = None, pass_fds: tuple[int, ...] = ()) -> _Proc:
        if self._stopping:
            raise PlatformError(f"not starting {name}: the mesh is stopping")
        os.makedirs(self.logs_dir, exist_ok=True)
        log = os.path.join(self.logs_dir, f"{name}.log")
        fh = open(log, "ab")
        try:
            # SIGTERM when the supervisor dies (even by SIGKILL): every child stops in its own clean way
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=fh, stderr=fh, stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True, cwd=cwd,
                preexec_fn=functools.partial(die_with_parent, signal.SIGTERM), pass_fds=pass_fds,
            )
        finally:
            fh.close()
        p = _Proc(name, role, proc, log, address, argv=tuple(argv), env=env, start_time=proc_start_time(proc.pid),
                  started=time.monotonic(), cwd=cwd)
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
            processes=[mesh_state.ProcessRecord(p.name, p.role, p.proc.pid, p.log, p.address, p.start_time,
                                                self._cmdline(p)) for p in self.procs],
            instances=[instance_record(i, self.settings.proxy.outbound) for i in self.instances],
            supervisor_start_time=proc_start_time(os.getpid()),
        ).save(self.opts.state_dir)

    @staticmethod
    def _cmdline(p: _Proc) -> list[str]:
        """The child's command line as /proc shows it once it has exec'd (a script's shows its interpreter)."""
        own = proc_cmdline(os.getpid())
        seen = proc_cmdline(p.proc.pid)
        return seen if seen and seen != own else list(p.argv)

    @staticmethod
    def _exited(what: str, p: _Proc) -> PlatformError:
        """The error for a child that exited while it should run: its exit code and the tail of its log."""
        tail = log_tail(p.log)
        return PlatformError(f"{what} exited with code {p.proc.returncode}; the end of {p.log}:\n{tail}"
                             if tail else f"{what} exited with code {p.proc.returncode}; see {p.log}")

    async def _wait_http(self, url: str, what: str, proc: _Proc | None = None) -> None:
        """Wait for a 200 from url; with proc, the answer must come from proc itself (its pid in PID_HEADER),
        never from another process on the same port."""
        deadline = time.monotonic() + self.opts.ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2), trust_env=False) as s:
            while True:
                if proc is not None and proc.proc.returncode is not None:
                    raise self._exited(what, proc)
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with s.get(url) as r:
                        pid = r.headers.get(PID_HEADER, "")
                        if r.status == 200 and (proc is None or pid == str(proc.proc.pid)):
                            return
                        if proc is not None and pid != str(proc.proc.pid):
                            raise PlatformError(
                                f"{url} is answered by another process (pid {pid or 'unknown'}), not this mesh's "
                                f"{what} (pid {proc.proc.pid}): stop the other one, or use other ports")
                if time.monotonic() > deadline:
                    log = f"; see {proc.log}" if proc else ""
                    raise PlatformError(f"{what} not ready after {self.opts.ready_timeout:.0f}s ({url}){log}")
                await asyncio.sleep(0.05)

    async def _wait_tcp(self, host: str, port: int, what: str, proc: _Proc) -> None:
        deadline = time.monotonic() + self.opts.ready_timeout
        while True:
            if proc.proc.returncode is not None:
                raise self._exited(what, proc)
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

    def _proxy_batch(self) -> proxyconfig.Batch:
        """The control plane's proxy defaults, fetched once for the proxies started together."""
        return proxyconfig.Batch(lambda: self.fetch_proxy_defaults(self.api_url, self.api_token_file))

    async def _agent_args(self, *, kind: str, ip: str, name: str, namespace: str, labels: dict[str, str], sa: str,
                          app_ports: dict[int, int], batch: proxyconfig.Batch | None = None) -> list[str]:
        agent_dir = os.path.join(self.opts.state_dir, "proxies", f"{name}.{namespace}")
        args = [
            "agent", "--type", kind, "--ip", ip, "--name", name, "--namespace", namespace,
            "--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--service-account", sa, "--xds-address", self.xds_address,
            "--state-dir", agent_dir,
            "--ca-address", f"{self.opts.cp_host}:{self.opts.ca_port}",
            "--dns-address", f"{self.opts.cp_host}:{self.opts.dns_port}",
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
        # `concurrency` as the proxy starts, Istio's EffectiveProxyConfig: workload ProxyConfig > namespace > root
        # namespace > the mesh config's defaultConfig > Istio's built-in default, here the agent's 2 or
        # `up --proxy-concurrency` (extra_agent_args), which the later flag overrides
        defaults = await (batch or self._proxy_batch()).defaults()
        workers = defaults.concurrency(namespace, labels)
        extra = ("--concurrency", str(workers)) if workers is not None else ()
        return self._sailmesh(*args, *self.opts.extra_agent_args, *extra)

    async def start(self) -> None:
        """Start everything and wait until all of it is ready; on failure stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts = self.opts
        resources, self.instances = load_and_plan(opts, self.app_ports.pick)
        self._down.update(startup_key(i) for i in self.instances if i.startup_probe is not None)
        os.makedirs(opts.state_dir, exist_ok=True)
        check_free(mesh_ports(opts, self.settings.proxy, resources, self.instances))
        self._write_workloads()
        env = dict(os.environ)

        self.say("starting control plane")
        ready.remove(self.cp_state_dir)
        cp = await self._spawn("controlplane", "controlplane", self._sailmesh(*self._cp_args()), env, self.api_url)
        self._save_state()
        await self._bound_ports(cp)
        await self._wait_http(f"{self.api_url}/ready", "control plane", cp)
        self.say(f"  control plane ready (xDS {self.xds_address}, API {self.api_url})")

        batch = self._proxy_batch()  # one fetch of the proxy defaults for every proxy started below
        self.say(f"starting ingress gateway on {opts.gateway_ip}")
        gw = await self._spawn(
            "istio-ingressgateway", "gateway",
            await self._agent_args(kind="router", ip=opts.gateway_ip, name="istio-ingressgateway-0",
                             namespace="istio-system", labels={**GATEWAY_LABELS, TLS_MODE_LABEL: TLS_MODE_ISTIO},
                             sa="istio-ingressgateway",
                             app_ports={}, batch=batch),
            env, opts.gateway_ip,
        )
        waits = [self._wait_http(f"http://{opts.gateway_ip}:{self.settings.proxy.health}/healthz/ready",
                                 "ingress gateway", gw)]
        if opts.egress_gateway_ip:
            self.say(f"starting egress gateway on {opts.egress_gateway_ip}")
            egw = await self._spawn(egress.NAME, "gateway", await self._agent_args(
                kind="router", ip=opts.egress_gateway_ip, name=egress.POD, namespace=egress.NAMESPACE,
                labels=egress.LABELS, sa=egress.SERVICE_ACCOUNT, app_ports={}, batch=batch), env,
                opts.egress_gateway_ip)
            waits.append(self._wait_http(f"http://{opts.egress_gateway_ip}:{self.settings.proxy.health}/healthz/ready",
                                         "egress gateway", egw))
        await self._start_forwarder(resources)
        starts = [self._start_instance(i, env, batch) for i in self.instances]
        tasks = [asyncio.create_task(w) for w in [*waits, *starts]]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self._save_state()  # every child has exec'd by now: record the command lines /proc shows
        for p in self.procs:
            self._watch(p)
        self._track(asyncio.create_task(self._watch_drains()))
        self._track(asyncio.create_task(self._gateway_deployments().run()))
        pending = [i.name for i in self.instances if startup_key(i) in self._down]
        self.say(f"all {len(self.instances)} workloads and the ingress gateway are ready" + (
            f" ({', '.join(pending)}: waiting for the startupProbe, out of the endpoints until it passes)"
            if pending else ""))

    def _cp_args(self) -> list[str]:
        """The control plane's arguments; a port still 0 there is bound by the control plane (_bound_ports)."""
        opts = self.opts
        args = ["controlplane", "--host", opts.cp_host, "--xds-port", str(opts.xds_port),
                "--http-port", str(opts.http_port), "--workload-file", self.workload_file,
                "--xds-tls-port", str(opts.xds_tls_port), "--state-dir", self.cp_state_dir,
                "--min-cert-ttl", str(opts.min_cert_ttl_s), "--ca-port", str(opts.ca_port),
                "--dns-port", str(opts.dns_port)]
        if opts.xds_plaintext:
            args.append("--xds-plaintext")
        for d in [*opts.config_dirs, *([egress.write_config(opts.state_dir)] if opts.egress_gateway_ip else [])]:
            args += ["--config-dir", d]
        return args

    async def _bound_ports(self, cp: _Proc) -> None:
        """The ports the control plane bound, from its ready record: a port left at 0 is bound by the control plane
        itself (a free one, with no window for another process to take it between a pick and the bind), and the
        agents, the state file and a restarted control plane (same ports: the proxies know them) use what it bound."""
        deadline = time.monotonic() + self.opts.ready_timeout
        while (record := ready.read(self.cp_state_dir)) is None or record.pid != cp.proc.pid:
            if cp.proc.returncode is not None:
                raise self._exited("control plane", cp)
            if time.monotonic() > deadline:
                raise PlatformError(f"control plane not ready after {self.opts.ready_timeout:.0f}s (no "
                                    f"{ready.CONTROLPLANE_RECORD} in {self.cp_state_dir}); see {cp.log}")
            await asyncio.sleep(0.05)
        o, bound = self.opts, record.ports
        o.http_port, o.xds_tls_port, o.ca_port = bound["http"], bound["xdsTls"], bound["ca"]
        o.dns_port = bound.get("dns") or o.dns_port
        if o.xds_plaintext:
            o.xds_port = bound["xds"]
        cp.argv = tuple(self._sailmesh(*self._cp_args()))  # what a restart runs
        cp.address = self.api_url
        self._save_state()

    async def _start_instance(self, inst: Instance, env: dict[str, str], batch: proxyconfig.Batch) -> None:
        """Start one instance's sidecar and app and wait until both are ready; with holdApplicationUntilProxyStarts
        (Istio's, on by default here) the app starts only once its sidecar is ready as a proxy."""
        self.say(f"starting {inst.namespace}/{inst.name} on {inst.ip}" + (" with sidecar" if inst.sidecar else ""))
        health = f"http://{inst.ip}:{self.settings.proxy.health}"
        agent: _Proc | None = None
        if inst.sidecar:
            agent = await self._spawn(
                f"{inst.name}.{inst.namespace}.sidecar", "agent",
                [*await self._agent_args(kind="sidecar", ip=inst.ip, name=inst.name, namespace=inst.namespace,
                                         labels=mesh_labels(inst), sa=inst.service_account,
                                         app_ports=dict(inst.app_ports), batch=batch), "--probe-app",
                 "--min-drain-seconds", str(MIN_DRAIN_S),
                 *(["--readiness-probe", inst.readiness_probe.to_json()]
                   if inst.readiness_probe and inst.readiness_probe.rewritten else []),
                 *(["--app-probers", inst.app_probers()] if inst.probes() else [])],
                env, inst.ip,
            )
            agent.instance = inst
            self._save_state()
            if inst.hold_application:
                from sailmesh.agent.health import PROXY_READY_PATH  # lazy: the agent's health module imports gRPC

                await self._wait_http(f"{health}{PROXY_READY_PATH}", f"sidecar of {inst.name}", agent)
        app = await self._spawn_app(inst, {**env, **app_env(inst, self.settings.proxy.outbound)})
        self._save_state()
        self._probe(app)
        for ap in inst.app_ports.values():
            await self._wait_tcp(inst.ip, ap, f"app {inst.name}", app)
        if agent is not None:
            await self._wait_http(f"{health}/healthz/ready", f"sidecar of {inst.name}", agent)

    async def _spawn_app(self, inst: Instance, env: dict[str, str]) -> _Proc:
        """Start (or restart) an instance's app: with `socketActivation` its listening sockets passed as systemd
        does (platform/listenfds.py), else its ports released for it to bind."""
        name, ports = f"{inst.name}.{inst.namespace}", dict(inst.app_ports)
        if not inst.socket_activation:
            self.app_ports.release(inst.ip, *ports.values())
            p = await self._spawn(name, "app", inst.command, env, inst.ip, inst.cwd)
        else:
            names = [next((d.name for d in inst.ports if d.container_port == cp and d.name), str(cp)) for cp in ports]
            with self.app_ports.passed(inst.ip, list(ports.values()), names, inst.command, env) as (argv, e, fds):
                p = await self._spawn(name, "app", argv, e, inst.ip, inst.cwd, pass_fds=fds)
            p.argv, p.env = inst.command, env  # a restart passes sockets anew
        p.instance = inst
        return p

    def planned_ports(self) -> list[Port]:
        """Every address:port start() would check and bind for this config, without starting anything."""
        self.instances, ports = planned_ports(self.opts, self.settings)
        return ports

    def _write_workloads(self) -> None:
        """The workload file the control plane watches: an instance whose app or sidecar is down is unhealthy."""
        workload_file.write(self.workload_file, [
            *(registry_workload(i, healthy=not ({f"{i.name}.{i.namespace}{part}" for part in PARTS}
                                                & self._down))
              for i in self.instances),
            *([egress.workload(self.opts.egress_gateway_ip)] if self.opts.egress_gateway_ip else [])])

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

    def _gateway_deployments(self) -> GatewayDeployments:
        """A gateway process per Gateway API Gateway (platform/gateways.py), as Istio deploys `<gateway>-istio`."""
        px = self.settings.proxy

        async def spawn(ns: str, gateway: str, labels: dict[str, str], ip: str) -> _Proc:
            name = f"{gateway}-istio"
            self._retired.discard(f"{name}.{ns}")  # a Gateway deleted and created again
            p = await self._spawn(f"{name}.{ns}", "gateway", await self._agent_args(
                kind="router", ip=ip, name=f"{name}-0", namespace=ns, labels=labels, sa=name, app_ports={}),
                dict(os.environ), ip)
            self._save_state()
            self._watch(p)
            return p

        def retire(p: _Proc) -> None:  # stopped on purpose: not restarted, not listed as failed
            self._retired.add(p.name)
            for current in [q for q in self.procs if q.name == p.name]:  # a restart replaced p with a new one
                if current.proc.returncode is None:
                    terminate(current.proc.pid)
                self.procs.remove(current)
            self._save_state()

        return GatewayDeployments(self, spawn, retire, self.opts.gateway_ip,
                                  lambda: {self.opts.cp_host, *(i.ip for i in self.instances)},
                                  (px.admin, px.health, px.stats, px.agent_metrics))

    def _watch(self, p: _Proc) -> None:
        self._track(asyncio.create_task(self._supervise(p)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _set_down(self, p: _Proc, down: bool) -> None:
        """An app or sidecar stopped or came back: rewrite the workload file if its instance's health changed."""
        if p.instance is not None:
            self._mark(p.name, down)

    def _mark(self, key: str, down: bool) -> bool:
        """Take an instance out of the endpoints (or back) for `key`; True when that changed anything."""
        if (key in self._down) == down:
            return False
        (self._down.add if down else self._down.discard)(key)
        self._write_workloads()
        return True

    async def _watch_drains(self) -> None:
        """A sidecar that drains (SIGTERM, from anyone) leaves a marker in its state dir: its instance leaves the
        endpoints at once, while its listeners still accept (the agent drains at least MIN_DRAIN_S)."""
        while not self._stopping:
            for p in self.procs:
                inst = p.instance
                if p.role == "agent" and inst is not None:
                    marker = os.path.join(self.opts.state_dir, "proxies", f"{inst.name}.{inst.namespace}", "draining")
                    self._mark(f"{p.name}.drain", p.proc.returncode is None and os.path.exists(marker))
            await asyncio.sleep(DRAIN_POLL_S)

    def _probe(self, p: _Proc) -> None:
        """A kubelet's probing of a (re)started app process: its startup, liveness and readiness probes."""
        inst = p.instance
        if inst is None or not inst.probes():
            return
        hooks = Hooks(alive=lambda: p.proc.returncode is None and not self._stopping,
                      mark=self._mark, kill=functools.partial(self._kill_app, p), say=self.say)
        self._track(asyncio.create_task(AppProber(inst, hooks, self.settings.proxy.agent_metrics, p.env).run()))

    async def _kill_app(self, p: _Proc, reason: str, grace: float = KILL_GRACE_S) -> None:
        """What a kubelet does to a container that failed its liveness or startup probe: stop it (SIGTERM, SIGKILL
        after the grace period); its restartPolicy then decides (see _supervise)."""
        if self._stopping or p.proc.returncode is not None:
            return
        policy = p.instance.restart_policy if p.instance else "Always"
        self.say(f"{reason}: stopping app {p.name} (restartPolicy {policy})")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await p.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGKILL)

    async def _supervise(self, p: _Proc) -> None:
        """Wait for p to exit; then restart it with back-off (apps: by their restartPolicy), or give up."""
        rc = await p.proc.wait()
        if self._stopping or p.name in self._retired:
            return
        self._set_down(p, True)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.proc.pid, signal.SIGKILL)  # what the app left behind in its process group (a port held)
        tail = log_tail(p.log)
        where = f"the end of {p.log}:\n{tail}" if tail else f"see {p.log}"
        if p.role == "agent" and p.instance is not None and not should_restart(p.instance.restart_policy, rc):
            # e.g. a job's app asked its sidecar to quit (POST /quitquitquit) before it exits
            self.say(f"sidecar {p.name} exited with code {rc}; restartPolicy {p.instance.restart_policy}: "
                     "not restarting it")
            return
        if p.role == "app" and p.instance is not None and not should_restart(p.instance.restart_policy, rc):
            self.say(f"app {p.name} exited with code {rc}; restartPolicy {p.instance.restart_policy}: "
                     f"not restarting it; {where}")
            # a job-style workload: its sidecar has nothing left to serve and exits too
            for sidecar in [q for q in self.procs if q.role == "agent" and q.instance is p.instance]:
                self._retired.add(sidecar.name)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(sidecar.proc.pid, signal.SIGTERM)
                self.say(f"  stopping its sidecar {sidecar.name}")
            return
        failures = self.opts.backoff.failures(p.failures, time.monotonic() - p.started)
        if self.opts.backoff.gives_up(failures):
            msg = (f"{p.role} {p.name} exited with code {rc}, {failures} times in a row within "
                   f"{self.opts.backoff.stable:.0f}s of starting: giving up on it; {where}")
            if p.role == "controlplane":
                self.fatal_reason = msg
                self.fatal.set()
            else:
                self.say(f"error: {msg}")
            return
        delay = self.opts.backoff.delay(failures)
        self.say(f"{p.role} {p.name} exited with code {rc}; restarting it in {delay:.0f}s "
                 f"(restart {failures} of at most {self.opts.backoff.limit} in a row); {where}")
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:  # an app's port taken meanwhile (listenfds: a socket-activated app's is bound again here)
            new = await (self._spawn_app(p.instance, p.env) if p.role == "app" and p.instance is not None
                         else self._spawn(p.name, p.role, p.argv, p.env, p.address, p.cwd))
        except (OSError, PlatformError) as e:
            if not self._stopping:
                self.say(f"error: cannot restart {p.role} {p.name}: {e}")
            return
        new.failures, new.instance = failures, p.instance
        self.procs.remove(p)
        self._save_state()
        self._watch(new)
        if new.role == "app":
            self._probe(new)
        try:
            await self._wait_ready(new)
        except PlatformError as e:
            if not self._stopping:
                self.say(f"warning: {e}")
            return
        if self._stopping:
            return
        self._save_state()
        self._set_down(new, False)
        self.say(f"  {new.role} {new.name} ready again")

    async def _wait_ready(self, p: _Proc) -> None:
        """Readiness of a (re)started process, checked against that process itself."""
        if p.role == "controlplane":
            await self._wait_http(f"{self.api_url}/ready", "control plane", p)
        elif p.role in ("agent", "gateway"):
            await self._wait_http(f"http://{p.address}:{self.settings.proxy.health}/healthz/ready", p.name, p)
            # ready as Istio counts it (Envoy LIVE, first CDS/LDS) may come before an inbound listener has warmed
            # (its certificate from SDS): the instance returns to the endpoints once those accept connections
            for port in (p.instance.app_ports if p.role == "agent" and p.instance is not None else {}):
                await self._wait_tcp(p.address, port, f"the inbound listener of {p.name}", p)
        elif p.instance is not None:
            for ap in p.instance.app_ports.values():
                await self._wait_tcp(p.address, ap, f"app {p.name}", p)

    def failed(self) -> list[str]:
        """Processes that exited while the mesh was supposed to be running."""
        return [f"{p.name} (exit {p.proc.returncode}, log {p.log})" for p in self.procs
                if p.proc.returncode is not None]

    async def stop(self, grace: float = 15.0) -> None:
        """Stop in order: sidecars and the gateway drain first, then apps, then the control plane."""
        if self._stopping:
            return
        self._stopping = True
        self.app_ports.close()
        for task in list(self._watchers):
            task.cancel()
        for roles in STOP_ORDER:
            group = [p for p in self.procs if p.role in roles and p.proc.returncode is None]
            for p in group:  # each leads its own process group: an app's children get the signal too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.proc.pid, stop_signal(p.role))
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
