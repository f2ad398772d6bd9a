"""Port planning of an embedded mesh: its options and every address:port its processes will listen on, without
starting anything. `sailmesh x precheck` imports this, not platform/local.py (the process supervisor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sailmesh.api.parse import load_paths
from sailmesh.api.resource import Resource
from sailmesh.errors import PlatformError
from sailmesh.platform.ports import Port, gateway_ports
from sailmesh.platform.restart import BackOff
from sailmesh.platform.workloads import Instance, plan
from sailmesh.processes import free_port
from sailmesh.settings import ProxyPorts, Settings

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
    # Each control-plane port left at 0 is bound by the control plane itself (port 0: a free one, no window for another
    # process to take it) and read back from its ready record (platform/ready.py) before anything uses it.
    xds_tls_port: int = 0  # ADS over mTLS
    ca_port: int = 0  # the CA's first-CSR port
    dns_port: int = 0  # the mesh's DNS (udp, tcp) that Envoys resolve DNS clusters with
    xds_plaintext: bool = False  # proxies use the plaintext loopback ADS port instead (debugging)
    min_cert_ttl_s: float = 60.0  # the CA's floor (tests lower it)
    cert_ttl_s: float = 0.0  # the lifetime agents ask for (0 = the CA's default, 24 h)
    backoff: BackOff = field(default_factory=BackOff)  # restarts of crashed processes
    egress_gateway_ip: str = ""  # run Istio's istio-egressgateway on this address ("" = none, Istio's default profile)


def load_and_plan(opts: MeshOptions, pick_port: Callable[[str], int] = free_port,
                  ) -> tuple[Sequence[Resource], list[Instance]]:
    """The mesh directory's resources and the workload instances they declare (their apps' ports from pick_port:
    the supervisor's holds them, listenfds.PortReservations)."""
    loaded = load_paths(opts.config_dirs)
    if loaded.errors:
        raise PlatformError("cannot read the mesh directory:\n  " + "\n  ".join(str(e) for e in loaded.errors))
    return loaded.resources, plan(loaded.resources, opts.base_ip, pick_port)


def mesh_ports(o: MeshOptions, px: ProxyPorts, resources: Sequence[Resource],
               instances: Sequence[Instance]) -> list[Port]:
    """Every address:port this mesh's processes will listen on."""
    control_plane = [Port(o.cp_host, o.http_port, "control plane HTTP API", "--http-port"),
                     Port(o.cp_host, o.xds_tls_port, "control plane xDS (mTLS)", "--xds-tls-port"),
                     Port(o.cp_host, o.ca_port, "control plane CA (first CSRs)", "--ca-port"),
                     *([Port("127.0.0.1", o.xds_port, "control plane xDS (plaintext)", "--xds-port")]
                       if o.xds_plaintext else [])]
    out = [p for p in control_plane if p.port]  # 0: the control plane binds a free one itself (nothing to check)
    proxy_ports = [(px.admin, "admin"), (px.agent_metrics, "metrics"), (px.health, "health"), (px.stats, "stats")]
    out += [Port(o.gateway_ip, n, f"ingress gateway {what}", "--gateway-ip") for n, what in proxy_ports]
    out += [Port(o.gateway_ip, n, "ingress gateway listener", "--gateway-ip")
            for n in gateway_ports(resources, GATEWAY_LABELS)]
    if o.egress_gateway_ip:
        out += [Port(o.egress_gateway_ip, n, f"egress gateway {what}", "--egress-gateway-ip")
                for n, what in proxy_ports]
    for inst in instances:
        who = f"{inst.namespace}/{inst.name}"
        if inst.sidecar:
            out += [Port(inst.ip, n, f"sidecar of {who} ({what})", "--base-ip")
                    for n, what in [*proxy_ports, (px.outbound, "outbound"), (px.inbound, "inbound")]]
        else:
            out.append(Port(inst.ip, px.outbound, f"forwarder of {who}", "--base-ip"))
        out += [Port(inst.ip, ap, f"app {who}", "--base-ip") for ap in inst.app_ports.values()]
    return out


def planned_ports(opts: MeshOptions, settings: Settings) -> tuple[list[Instance], list[Port]]:
    """The instances and every address:port `sailmesh up` would check and bind for this config."""
    resources, instances = load_and_plan(opts)
    return instances, mesh_ports(opts, settings.proxy, resources, instances)
