"""The agent's lifetime: bootstrap, health, Envoy (and optionally the app) until a signal, then drain and exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sailmesh.agent import bootstrap
from sailmesh.agent.admin import EnvoyAdmin
from sailmesh.agent.app import AppProcess, app_environment
from sailmesh.agent.config import AgentConfig, parse_address
from sailmesh.agent.envoy import EnvoyOptions, EnvoySupervisor
from sailmesh.agent.health import HealthServer, Readiness, probe_check, tcp_app_check
from sailmesh.agent.identity import CertificateManager, IdentityOptions, WorkloadCertificate
from sailmesh.agent.istio_stats import EnvoyIstioStats
from sailmesh.agent.probes import app_health_handler, parse_app_probers
from sailmesh.agent.sds import SdsServer, socket_path, write_xds_secrets
from sailmesh.agent.status import METRICS_PATH, StatusServer
from sailmesh.agent.telemetry import ISTIO_BUCKETS, AccessLogServer, IstioMetrics, local_workload
from sailmesh.settings import ControlPlanePorts

if TYPE_CHECKING:
    from sailmesh.agent.dns import DnsProxy
    from sailmesh.agent.dnstable import NameTableClient
    from sailmesh.metrics import Registry

log = logging.getLogger(__name__)

BOOTSTRAP_FILE = "envoy-bootstrap.json"
ALS_SOCKET = "als.sock"
LOG_FILE = "envoy.log"
PID_FILE = "envoy.pid"
# left in the state dir while the agent drains: the embedded platform takes the workload out of the endpoints when
# it sees it (as a terminating pod leaves its Service's endpoints), before the listeners close
DRAINING_FILE = "draining"


def als_socket_path(cfg: AgentConfig, state_dir: Path) -> str:
    """The access-log socket in the (private) state dir; an abstract socket when that path is too long for one."""
    path = str(state_dir.absolute() / ALS_SOCKET)
    return path if len(path) < 100 else f"@sailmesh-als-{cfg.ip}-{cfg.namespace}-{cfg.name}"[:100]


def write_bootstrap(cfg: AgentConfig, state_dir: Path, extra_static: dict[str, Any] | None = None) -> Path:
    """Write the bootstrap into state_dir (created, private) and return its path."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / BOOTSTRAP_FILE
    secrets = str(xds_secrets_dir(state_dir)) if cfg.xds_tls else ""
    path.write_text(bootstrap.to_json(bootstrap.build(cfg, extra_static, sds_socket=str(socket_path(state_dir)),
                                                      xds_secrets_dir=secrets,
                                                      als_socket=als_socket_path(cfg, state_dir))))
    return path


def xds_secrets_dir(state_dir: Path) -> Path:
    """Where the agent keeps the certificate Envoy presents to the control plane (0700)."""
    return state_dir.resolve() / "xds-certs"


def dns_proxy(cfg: AgentConfig, certs: CertificateManager | None,
              metrics: Registry | None = None) -> tuple[DnsProxy, NameTableClient] | None:
    """Istio's DNS proxy and the stream of its name table, when DNS capture is on."""
    if not cfg.dns_capture:
        return None
    # only here: dnspython's query modules load an HTTP/2 client stack (DNS over HTTPS), ~0.2 CPU s of every
    # agent's start where the agent serves no DNS (the embedded mesh, a VM without capture)
    from sailmesh.agent.dns import DnsMetrics, DnsProxy, parse_upstreams
    from sailmesh.agent.dnstable import NameTableClient
    from sailmesh.dnsio import ResolvConf, read_resolv_conf

    resolv = read_resolv_conf(cfg.resolv_conf)
    if cfg.dns_upstreams:
        resolv = ResolvConf(parse_upstreams(cfg.dns_upstreams), resolv.search)
    proxy = DnsProxy(cfg.namespace, cfg.domain_suffix, resolv, parallel=cfg.dns_forward_parallel,
                     metrics=DnsMetrics(metrics) if metrics is not None else None)
    return proxy, NameTableClient(cfg, proxy.update, lambda: certs.current if certs is not None else None)


def certificate_manager(cfg: AgentConfig) -> CertificateManager | None:
    """The workload's certificate manager, when the agent was given a join token."""
    if not cfg.token_file:
        return None
    return CertificateManager(IdentityOptions(
        ca_address=cfg.ca_address or f"{cfg.xds_host}:{ControlPlanePorts().ca}", ca_root_file=cfg.ca_root_file,
        token_file=cfg.token_file, trust_domain=cfg.trust_domain, namespace=cfg.namespace,
        service_account=cfg.service_account, ttl_s=cfg.cert_ttl_s, instance=f"{cfg.namespace}/{cfg.name}",
        renew_address=f"{cfg.xds_host}:{cfg.xds_port}" if cfg.xds_tls else ""))


async def wait_first(certs: CertificateManager, stop: asyncio.Event) -> None:
    """Until the first certificate arrived (or stop)."""
    waiters = [asyncio.create_task(certs.first.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()


async def _drain(envoy: EnvoySupervisor, cfg: AgentConfig, hurry: asyncio.Event | None, minimum: float) -> None:
    """Drain Envoy (readiness is already 503) until no request is in flight (and at least `minimum` seconds
    passed), the drain time passes, or hurry."""
    log.info("shutting down: readiness 503, draining Envoy for up to %.1fs (at least %.1fs)", cfg.drain_seconds,
             minimum)
    drain = asyncio.create_task(envoy.drain(inbound_only=cfg.proxy_type == "sidecar", timeout=cfg.drain_seconds,
                                            minimum=minimum))
    hurried = asyncio.create_task((hurry or asyncio.Event()).wait())
    await asyncio.wait([drain, hurried], return_when=asyncio.FIRST_COMPLETED)
    for task in (hurried, drain):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if not drain.cancelled() and drain.result():
        log.info("drained: no request in flight")
    elif drain.cancelled():
        log.warning("second signal: not waiting for the drain to finish")


async def run_agent(
    cfg: AgentConfig,
    state_dir: Path,
    stop: asyncio.Event,
    hurry: asyncio.Event | None = None,
    command: Sequence[str] = (),
    require_xds: bool = True,
    envoy_log_to_file: bool = True,
    extra_static: dict[str, Any] | None = None,
    whole_mesh: asyncio.Event | None = None,
) -> int:
    """Run until `stop` is set (or Envoy gives up, or the app exits); drain; return the exit code.

    `hurry` (a second signal) cuts the drain wait short; `whole_mesh` set (SIGINT: the mesh itself is stopping, no
    other proxy will route here again) drains in-flight requests without the minimum drain time.
    """
    path = write_bootstrap(cfg, state_dir, extra_static)
    draining = state_dir / DRAINING_FILE
    draining.unlink(missing_ok=True)  # a previous run's
    admin = EnvoyAdmin(cfg.admin_url)
    envoy = EnvoySupervisor(
        EnvoyOptions(
            bootstrap_path=path,
            drain_seconds=cfg.drain_seconds,
            concurrency=cfg.concurrency,
            log_level=cfg.log_level,
            log_path=state_dir / LOG_FILE if envoy_log_to_file else None,
            pid_path=state_dir / PID_FILE,
        ),
        admin,
    )
    app_check = tcp_app_check(cfg.ip, [a for _, a in cfg.app_ports]) if cfg.probe_app and cfg.app_ports else None
    if cfg.readiness_probe:
        app_check = probe_check(cfg.ip, json.loads(cfg.readiness_probe))
    readiness = Readiness(admin, require_xds=require_xds, generation=lambda: envoy.restarts, app_check=app_check)
    health = HealthServer(readiness, cfg.ip, cfg.health_port)
    probers = parse_app_probers(cfg.ip, cfg.app_probers)
    status = StatusServer(
        readiness,
        cfg.ip,
        cfg.status_port,
        envoy_metrics_url=cfg.admin_url + METRICS_PATH,
        quit_event=stop,
        restarts=lambda: envoy.restarts,
        app_metrics_url=cfg.app_metrics_url,
        app_health=app_health_handler(probers) if probers else None,
    )
    istio_metrics = IstioMetrics(local_workload(cfg.name, cfg.namespace, dict(cfg.labels), cfg.cluster_id),
                                 cfg.domain_suffix)
    status.metrics.add_collector(istio_metrics)
    status.envoy_page = EnvoyIstioStats(istio_metrics, ISTIO_BUCKETS).take
    als = AccessLogServer(istio_metrics, als_socket_path(cfg, state_dir))
    app = AppProcess(command, app_environment(cfg)) if command else None
    sds = SdsServer(socket_path(state_dir))
    certs = certificate_manager(cfg)
    if certs is not None:
        certs.on_change(sds.update)
        if cfg.xds_tls:
            def for_xds(cert: WorkloadCertificate) -> None:
                write_xds_secrets(cert, xds_secrets_dir(state_dir))

            certs.on_change(for_xds)
    dns = dns_proxy(cfg, certs, status.metrics)  # Istio's istio_agent_dns_* on the merged page
    exit_code = 0
    waiters: list[asyncio.Task[Any]] = []
    try:
        if certs is not None:
            await sds.start()
            certs.start()  # Envoy waits (warming) for secrets it references until the first certificate
            if cfg.xds_tls:  # but its bootstrap reads the xDS certificate file: that must exist first
                await wait_first(certs, stop)
        if dns is not None:
            await dns[0].start(*parse_address(cfg.dns_proxy_address, 15053))
            dns[1].start()
        await health.start()
        await status.start()
        await als.start()
        await envoy.start()
        if app is not None:
            await app.start()
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(envoy.gave_up.wait())]
        app_waiter = asyncio.create_task(app.wait()) if app is not None else None
        if app_waiter is not None:
            waiters.append(app_waiter)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if envoy.gave_up.is_set():
            exit_code = 1
        elif app_waiter is not None and app_waiter.done():
            rc = app_waiter.result()
            log.warning("app exited with code %s; stopping", rc)
            exit_code = 0 if rc == 0 else 1
        readiness.draining = True
        draining.write_text("")
        await _drain(envoy, cfg, hurry, 0.0 if whole_mesh is not None and whole_mesh.is_set()
                     else cfg.min_drain_seconds)
    finally:
        for w in waiters:
            w.cancel()
        readiness.draining = True
        if app is not None:
            await app.stop()
        envoy_rc = await envoy.stop()
        log.info("envoy stopped (exit code %s)", envoy_rc)
        if dns is not None:
            await dns[1].stop()
            await dns[0].close()
        await als.stop()
        await status.stop()
        await health.stop()
        await admin.close()
        if certs is not None:
            await certs.stop()
        await sds.stop()
        draining.unlink(missing_ok=True)
    return exit_code


async def serve(cfg: AgentConfig, state_dir: Path, command: Sequence[str] = ()) -> int:
    """run_agent with SIGTERM/SIGINT wired: the first drains, a second stops at once. SIGTERM is a pod going away
    while the mesh runs on (the drain lasts at least --min-drain-seconds, time for its endpoint to leave the other
    proxies); SIGINT (Ctrl-C, the platform stopping the whole mesh) only waits for the requests in flight."""
    stop, hurry, whole_mesh = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set() and sig == signal.SIGINT:
            whole_mesh.set()
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await run_agent(cfg, state_dir, stop, hurry, command, whole_mesh=whole_mesh)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
