"""Plan local workload instances from LocalWorkload resources: names, loopback addresses, ports, env."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sailmesh.api import locality
from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.platform.probes import APP_HEALTH, Probe, app_health_path
from sailmesh.platform.probes import parse as parse_probe
from sailmesh.platform.restart import RESTART_POLICIES
from sailmesh.platform.state import InstanceRecord
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL, Workload

LOCAL_WORKLOAD_KIND = "LocalWorkload"


@dataclass(frozen=True)
class PortDecl:
    """One containerPort of a workload."""

    container_port: int
    name: str = ""
    protocol: str = "HTTP"


@dataclass(frozen=True)
class Instance:
    """One planned instance ("pod") of a LocalWorkload."""

    name: str  # reviews-v2-0
    workload: str  # reviews-v2
    namespace: str
    ip: str
    labels: Mapping[str, str]
    service_account: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    ports: tuple[PortDecl, ...]
    app_ports: Mapping[int, int] = field(default_factory=dict)  # containerPort -> app port
    sidecar: bool = True
    origin: str = ""
    locality: str = ""  # region/zone/subzone, as a WorkloadEntry's
    network: str = ""
    weight: int = 1  # load-balancing weight of its endpoints
    restart_policy: str = "Always"  # a Pod's restartPolicy: Always | OnFailure | Never
    readiness_probe: Probe | None = None  # port rewritten to the app's real port
    liveness_probe: Probe | None = None  # a failure restarts the app (by restart_policy)
    startup_probe: Probe | None = None  # until it passes: no liveness/readiness probing, out of the endpoints
    hold_application: bool = True  # Istio's holdApplicationUntilProxyStarts (on by default here)
    socket_activation: bool = False  # the app gets its listening sockets (platform/listenfds.py)
    cwd: str | None = None  # the app's working directory: spec.workdir, else its config file's directory

    def probes(self) -> dict[str, Probe]:
        """The probes it declares, by field (readinessProbe, livenessProbe, startupProbe)."""
        found = {"readinessProbe": self.readiness_probe, "livenessProbe": self.liveness_probe,
                 "startupProbe": self.startup_probe}
        return {f: p for f, p in found.items() if p is not None}

    def app_probers(self) -> str:
        """Its probes as Istio's ISTIO_KUBE_APP_PROBERS (rewritten path -> original probe), for its agent; the
        container is named after the workload. Exec probes are not rewritten (the platform runs them)."""
        return json.dumps({app_health_path(self.workload, f): p.prober() for f, p in self.probes().items()
                           if p.rewritten})

    @property
    def named_ports(self) -> dict[str, int]:
        """Container port name -> containerPort (how a Service's named targetPort finds this instance)."""
        return {p.name: p.container_port for p in self.ports if p.name}


def _ports(spec: Mapping[str, Any], res: Resource) -> tuple[PortDecl, ...]:
    out = []
    for i, p in enumerate(spec.get("ports") or []):
        try:
            out.append(PortDecl(int(p["containerPort"]), str(p.get("name", "")), str(p.get("protocol", "HTTP"))))
        except (KeyError, TypeError, ValueError) as e:
            raise PlatformError(f"{res}: spec.ports[{i}]: needs an integer containerPort") from e
    return tuple(out)


def plan(
    resources: Iterable[Resource],
    base_ip: str,
    pick_port: Callable[[str], int],
) -> list[Instance]:
    """Instances for every LocalWorkload, addresses counted up from base_ip (e.g. 127.0.10.2)."""
    ip = ipaddress.IPv4Address(base_ip)
    out: list[Instance] = []
    workloads = sorted(
        (r for r in resources if r.kind == LOCAL_WORKLOAD_KIND), key=lambda r: (r.namespace, r.name)
    )
    for res in workloads:
        spec = res.spec
        cmd = spec.get("command")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise PlatformError(f"{res}: spec.command must be a non-empty list of strings")
        command = tuple(sys.executable if i == 0 and c in ("python", "python3") else c for i, c in enumerate(cmd))
        env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        ports = _ports(spec, res)
        replicas = int(spec.get("replicas", 1))
        weight = spec.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise PlatformError(f"{res}: spec.weight must be an integer >= 1")
        sidecar = bool(spec.get("sidecar", True))
        restart_policy = str(spec.get("restartPolicy") or "Always")
        hold = spec.get("holdApplicationUntilProxyStarts", True)
        # relative paths (a command's script, workdir) resolve against the config file's directory, not the
        # directory `sailmesh up` was started in
        base = os.path.dirname(os.path.abspath(res.source.file)) if res.source.file else None
        workdir = spec.get("workdir")
        if workdir is not None and not isinstance(workdir, str):
            raise PlatformError(f"{res}: spec.workdir must be a path")
        cwd = os.path.join(base or os.getcwd(), workdir) if workdir else base
        if not isinstance(hold, bool):
            raise PlatformError(f"{res}: spec.holdApplicationUntilProxyStarts must be true or false")
        if restart_policy not in RESTART_POLICIES:
            raise PlatformError(f"{res}: spec.restartPolicy must be one of {', '.join(RESTART_POLICIES)}")
        for n in range(replicas):
            if not ip.is_loopback:
                raise PlatformError(f"ran out of loopback addresses at {ip}")
            addr = str(ip)
            ip += 1
            app_ports = {p.container_port: pick_port(addr) if sidecar else p.container_port for p in ports}
            named = {p.name: p.container_port for p in ports if p.name}
            probes = {f: parse_probe(spec.get(f), named, app_ports, f"{res}: spec.{f}", f) for f in APP_HEALTH}
            out.append(
                Instance(
                    name=f"{res.name}-{n}",
                    workload=res.name,
                    namespace=res.namespace,
                    ip=addr,
                    labels=dict(res.labels),
                    service_account=str(spec.get("serviceAccount") or "default"),
                    command=command,
                    env=env,
                    ports=ports,
                    # with a sidecar, the sidecar owns containerPort and the app listens on a free port
                    app_ports=app_ports,
                    sidecar=sidecar,
                    origin=f"{LOCAL_WORKLOAD_KIND} {res.namespace}/{res.name}",
                    locality=str(spec.get("locality") or ""),
                    network=str(spec.get("network") or ""),
                    weight=weight,
                    restart_policy=restart_policy,
                    readiness_probe=probes["readinessProbe"],
                    liveness_probe=probes["livenessProbe"],
                    startup_probe=probes["startupProbe"],
                    hold_application=hold,
                    socket_activation=spec.get("socketActivation") is True,
                    cwd=cwd,
                )
            )
    return out


def mesh_labels(inst: Instance) -> dict[str, str]:
    """The labels the mesh sees for an instance: its locality's topology labels and its network's
    `topology.istio.io/network` unless labelled (as Istio's AugmentLabels adds them); with a sidecar (whose agent
    serves its certificate over SDS), Istio's injected `security.istio.io/tlsMode: istio`, which turns auto mTLS
    on towards it and from it."""
    labels = {**locality.topology_labels(inst.locality), **inst.labels}  # Istio's AugmentLabels for the locality
    if inst.network and not labels.get(locality.NETWORK_LABEL):
        labels[locality.NETWORK_LABEL] = inst.network
    if inst.sidecar:
        labels[TLS_MODE_LABEL] = TLS_MODE_ISTIO
    return labels


def registry_workload(inst: Instance, healthy: bool = True) -> Workload:
    """The Workload the control plane's registry holds for an instance (written to the workload file); an unhealthy
    one (its app or sidecar is down) keeps its entry but leaves every proxy's endpoints."""
    return Workload(
        healthy=healthy,
        name=inst.name,
        namespace=inst.namespace,
        address=inst.ip,
        labels=mesh_labels(inst),
        service_account=inst.service_account,
        app_ports=dict(inst.app_ports),
        locality=inst.locality,
        network=inst.network,
        origin=inst.origin,
        ports=inst.named_ports,
        weight=inst.weight,
    )


def app_env(inst: Instance, proxy_port: int) -> dict[str, str]:
    """The environment an app process runs with: where to listen, its identity, and its proxy on its own address:
    its sidecar, or for a workload outside the mesh the platform's plain forwarder (platform/forwarder.py)."""
    env = dict(inst.env)
    first = next(iter(inst.app_ports.values()), 0)
    env.update(
        HOST=inst.ip,
        PORT=str(first),
        POD_NAME=inst.name,
        HOSTNAME=inst.name,
        POD_NAMESPACE=inst.namespace,
        POD_IP=inst.ip,
        SERVICE_ACCOUNT=inst.service_account,
    )
    for cp, ap in inst.app_ports.items():
        env[f"PORT_{cp}"] = str(ap)
    proxy = f"http://{inst.ip}:{proxy_port}"
    env.update(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="", no_proxy="")
    return env


def instance_record(inst: Instance, proxy_port: int) -> InstanceRecord:
    """What the state file keeps of an instance, for `sailmesh get workloads` and `sailmesh exec`."""
    return InstanceRecord(
        name=inst.name,
        workload=inst.workload,
        namespace=inst.namespace,
        address=inst.ip,
        labels=dict(inst.labels),
        service_account=inst.service_account,
        ports=[{"name": p.name, "containerPort": p.container_port, "protocol": p.protocol,
                "appPort": inst.app_ports.get(p.container_port, p.container_port)} for p in inst.ports],
        sidecar=inst.sidecar,
        env=app_env(inst, proxy_port),
    )
