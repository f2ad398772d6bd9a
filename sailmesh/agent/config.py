"""AgentConfig: everything one agent needs to know about its workload, its Envoy and its control plane."""

from __future__ import annotations

from dataclasses import dataclass, field

from sailmesh.errors import AgentError

PROXY_TYPES = ("sidecar", "router")
INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")


@dataclass(frozen=True)
class AgentConfig:
    """One workload instance ("pod") and the Envoy that fronts it."""

    ip: str
    name: str
    namespace: str = "default"
    proxy_type: str = "sidecar"
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = "default"
    # containerPort -> the port the app really listens on (Istio-style "9080:41234").
    app_ports: tuple[tuple[int, int], ...] = ()
    probe_app: bool = False  # readiness also needs the app listening on its app ports (the embedded platform)
    readiness_probe: str = ""  # JSON of the app's rewritten readinessProbe (platform/probes.py), replaces probe_app
    app_probers: str = ""  # Istio's ISTIO_KUBE_APP_PROBERS JSON: /app-health/<container>/<probe> -> the app's probe
    xds_host: str = "127.0.0.1"
    xds_port: int = 15010
    delta: bool = False
    admin_port: int = 15000
    stats_port: int = 15090
    health_port: int = 15021
    status_port: int = 15020  # merged Prometheus metrics, /quitquitquit
    app_metrics_port: int = 0  # scrape the app's metrics into the merged page (0 = do not)
    app_metrics_path: str = "/metrics"
    drain_seconds: float = 5.0
    min_drain_seconds: float = 0.0  # drain at least this long (Istio's MINIMUM_DRAIN_DURATION; 0: exit at zero)
    concurrency: int = 2
    log_level: str = "warning"
    # How long Envoy waits for its first CDS/LDS before starting anyway (Istio uses 0 = forever;
    # a bounded value lets Envoy go LIVE without a control plane; readiness still waits for config).
    initial_fetch_timeout_s: float = 10.0
    max_downstream_connections: int = 100_000
    domain_suffix: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    mesh_id: str = "cluster.local"
    version: str = ""
    # Workload identity: the CA (the control plane's TLS port), the root that verifies it, the 0600 join-token
    # file; without a token file the agent runs without a certificate (SDS answers nothing).
    ca_address: str = ""
    ca_root_file: str = ""
    token_file: str = ""
    trust_domain: str = "cluster.local"
    cert_ttl_s: float = 0.0  # requested certificate lifetime (0 = the CA's default)
    xds_tls: bool = False  # xDS over mTLS with the workload certificate (the control plane's 15012)
    dns_address: str = ""  # the mesh's DNS (HOST:PORT, udp): Envoy's only resolver (loopback; it forwards other names)
    # Istio's DNS proxying (ISTIO_META_DNS_CAPTURE): the agent answers the mesh's names on dns_proxy_address (UDP and
    # TCP) from the control plane's name table and forwards the rest to dns_upstreams ("" = resolv.conf's servers)
    dns_capture: bool = False
    dns_auto_allocate: bool = False  # Istio's ISTIO_META_DNS_AUTO_ALLOCATE (effective with dns_capture)
    dns_proxy_address: str = "127.0.0.1:15053"
    dns_upstreams: str = ""
    dns_forward_parallel: bool = False  # Istio's DNS_FORWARD_PARALLEL: every upstream at once, the first answer wins
    resolv_conf: str = "/etc/resolv.conf"
    # Istio's INTERCEPTION_MODE node metadata: REDIRECT, TPROXY or NONE; "" = not declared, the embedded mesh's
    # sidecar reached on its own ports (a declared REDIRECT/TPROXY means istio-iptables captures the pod)
    interception_mode: str = ""
    # the pod's addresses of the other family, declared after `ip` in INSTANCE_IPS (a dual-stack pod: Istio's
    # ISTIO_DUAL_STACK agent; the control plane then serves both wildcards)
    extra_ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.proxy_type not in PROXY_TYPES:
            raise AgentError(f"proxy type must be one of {PROXY_TYPES}, not {self.proxy_type!r}")
        if not self.ip.startswith("127.") and not self.interception_mode:
            # the embedded mesh's pods are loopback addresses; a pod on a real network declares its interception
            # mode (the injector's ISTIO_META_INTERCEPTION_MODE), and its admin then binds 127.0.0.1 (admin_host)
            raise AgentError(f"the embedded mesh's pod ip must be loopback (give an interception mode for a "
                             f"pod on a network): {self.ip!r}")
        if not self.name or not self.namespace:
            raise AgentError("name and namespace are required")
        if self.drain_seconds < 0:
            raise AgentError("drain seconds must not be negative")
        if self.interception_mode and self.interception_mode not in INTERCEPTION_MODES:
            raise AgentError(f"interception mode must be one of {INTERCEPTION_MODES}, not {self.interception_mode!r}")
        if self.xds_tls and not self.token_file:
            raise AgentError("xDS over TLS needs a workload certificate: give a join token file")

    @property
    def app(self) -> str:
        """The workload's app name as Istio derives it (app label, else app.kubernetes.io/name, else name)."""
        return self.labels.get("app") or self.labels.get("app.kubernetes.io/name") or self.name

    @property
    def node_id(self) -> str:
        """Istio's proxy id: `sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`."""
        return f"{self.proxy_type}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.{self.domain_suffix}"

    @property
    def node_cluster(self) -> str:
        """Istio's service cluster: `<app>.<namespace>`."""
        return f"{self.app}.{self.namespace}"

    @property
    def admin_host(self) -> str:
        """Where Envoy's admin interface binds: the (loopback) pod ip in the embedded mesh, 127.0.0.1 in a pod
        with a network address, as Istio's (admin is never exposed off the pod)."""
        return self.ip if self.ip.startswith("127.") else "127.0.0.1"

    @property
    def admin_url(self) -> str:
        """Base URL of this Envoy's admin interface."""
        return f"http://{self.admin_host}:{self.admin_port}"

    @property
    def app_metrics_url(self) -> str:
        """Where the app's own Prometheus metrics are, or ""."""
        return f"http://{self.ip}:{self.app_metrics_port}{self.app_metrics_path}" if self.app_metrics_port else ""

    @property
    def app_ports_text(self) -> str:
        """The APP_PORTS metadata value, e.g. `9080:41234,9090:41235`."""
        return ",".join(f"{c}:{a}" for c, a in self.app_ports)


def parse_labels(text: str) -> dict[str, str]:
    """`app=x,version=v1` -> {"app": "x", "version": "v1"}."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise AgentError(f"label {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_app_ports(text: str) -> tuple[tuple[int, int], ...]:
    """`9080:41234,9090` -> ((9080, 41234), (9090, 9090)); a bare port maps to itself."""
    ports: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        container, _, app = part.partition(":")
        try:
            pair = (int(container), int(app or container))
        except ValueError as e:
            raise AgentError(f"app port {part!r} is not PORT[:APP_PORT]") from e
        if not all(0 < p < 65536 for p in pair):
            raise AgentError(f"app port {part!r} is out of range")
        ports.append(pair)
    return tuple(ports)


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `host`) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host, int(port)
    except ValueError as e:
        raise AgentError(f"address {text!r} is not HOST:PORT") from e
