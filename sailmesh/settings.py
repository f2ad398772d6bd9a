"""Grouped, frozen settings: the only place environment variables are read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ENV_PREFIX = "SAILMESH_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as Istio's env.Register reads booleans
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def istio_bool(name: str, default: bool) -> bool:
    """An Istio boolean environment variable under its own name (no SAILMESH_ prefix: the same manifests set it for
    istiod and sailmesh); unset, empty or unreadable keeps the default, as Istio's env.Register."""
    raw = os.environ.get(name, "")
    return True if raw in _GO_TRUE else False if raw in _GO_FALSE else default


@dataclass(frozen=True)
class MeshDefaults:
    """Mesh-wide identity and naming, as Istio's MeshConfig defaults them, and the pilot feature flags that shape
    generated config (read from the environment at start, as istiod's pilot/pkg/features)."""

    trust_domain: str = "cluster.local"
    domain_suffix: str = "cluster.local"
    root_namespace: str = "istio-system"
    default_namespace: str = "default"
    outbound_traffic_policy: str = "ALLOW_ANY"  # MeshConfig.outboundTrafficPolicy.mode (or REGISTRY_ONLY)
    # Istio's ENABLE_LOCALITY_WEIGHTED_LB_CONFIG (pilot/pkg/features/experimental.go, off): every outbound
    # cluster under a locality (not zone-aware) setting, or none, gets locality_weighted_lb_config
    locality_weighted_lb_config: bool = field(
        default_factory=lambda: istio_bool("ENABLE_LOCALITY_WEIGHTED_LB_CONFIG", False))
    # Istio's PILOT_ENABLE_METADATA_EXCHANGE (pilot/pkg/features/telemetry.go, on): false drops the metadata-exchange
    # HTTP filters and `istio-peer-exchange` from the mTLS ALPN lists (Istio's ALPNInMesh, ALPNDownstream)
    metadata_exchange: bool = field(default_factory=lambda: istio_bool("PILOT_ENABLE_METADATA_EXCHANGE", True))


@dataclass(frozen=True)
class ControlPlanePorts:
    """Control-plane listening ports (Istio's istiod ports)."""

    host: str = "127.0.0.1"
    xds_plaintext: int = 15010
    xds_tls: int = 15012
    ca: int = 15013  # first CSRs (join token, TLS without a client certificate): grpcio cannot ask "if given"
    monitoring: int = 15014
    webhook: int = 15017


@dataclass(frozen=True)
class ProxyPorts:
    """Per-proxy ports (Istio's sidecar ports)."""

    admin: int = 15000
    outbound: int = 15001
    inbound: int = 15006
    agent_metrics: int = 15020
    health: int = 15021
    stats: int = 15090


@dataclass(frozen=True)
class Debounce:
    """Push debouncing: a quiet period and a maximum delay (Istio's PILOT_DEBOUNCE_AFTER/MAX)."""

    after_s: float = 0.1
    max_s: float = 10.0


@dataclass(frozen=True)
class GatewayApiSwitches:
    """Istio's Gateway API switches (pilot/pkg/features), each true by default: `enabled` PILOT_ENABLE_GATEWAY_API
    (the Gateway API is read and converted at all), `status` PILOT_ENABLE_GATEWAY_API_STATUS (its status is
    written), `deployment_controller` PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER (a gateway per Gateway),
    `gatewayclass_controller` PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER (the default GatewayClass)."""

    enabled: bool = field(default_factory=lambda: istio_bool("PILOT_ENABLE_GATEWAY_API", True))
    status: bool = field(default_factory=lambda: istio_bool("PILOT_ENABLE_GATEWAY_API_STATUS", True))
    deployment_controller: bool = field(
        default_factory=lambda: istio_bool("PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER", True))
    gatewayclass_controller: bool = field(
        default_factory=lambda: istio_bool("PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER", True))


@dataclass(frozen=True)
class IstioStatusSwitches:
    """Istio's switches for the status of its own kinds (pilot/pkg/features), each false by default: `analysis`
    PILOT_ENABLE_ANALYSIS (analysis messages in `status.validationMessages`), `status` PILOT_ENABLE_STATUS and
    `distribution_tracking` PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING (both on: the `Reconciled` condition)."""

    analysis: bool = field(default_factory=lambda: istio_bool("PILOT_ENABLE_ANALYSIS", False))
    status: bool = field(default_factory=lambda: istio_bool("PILOT_ENABLE_STATUS", False))
    distribution_tracking: bool = field(
        default_factory=lambda: istio_bool("PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING", False))

    @property
    def reconciled(self) -> bool:
        """Whether the Reconciled condition is written (Istio: EnableStatus && EnableDistributionTracking)."""
        return self.status and self.distribution_tracking


@dataclass(frozen=True)
class Settings:
    """Everything configurable, grouped."""

    mesh: MeshDefaults = field(default_factory=MeshDefaults)
    controlplane: ControlPlanePorts = field(default_factory=ControlPlanePorts)
    proxy: ProxyPorts = field(default_factory=ProxyPorts)
    debounce: Debounce = field(default_factory=Debounce)
    gateway_api: GatewayApiSwitches = field(default_factory=GatewayApiSwitches)
    istio_status: IstioStatusSwitches = field(default_factory=IstioStatusSwitches)
    state_dir: str = field(default_factory=lambda: _env("STATE_DIR", os.path.expanduser("~/.sailmesh")))
    envoy_path: str = field(default_factory=lambda: _env("ENVOY", ""))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "info"))
    # A response write blocked this long ends the proxy's stream (Istio's PILOT_XDS_SEND_TIMEOUT); 0: no limit.
    xds_send_timeout_s: float = field(default_factory=lambda: float(_env("XDS_SEND_TIMEOUT", "30")))
    # Connections sending a push at once (Istio's PILOT_PUSH_THROTTLE) and new xDS streams admitted per second
    # (Istio's PILOT_MAX_REQUESTS_PER_SECOND); 0: no limit. Defaults measured in docs/reliability.md.
    push_throttle: int = field(default_factory=lambda: int(_env("PUSH_THROTTLE", "100")))
    xds_streams_per_s: float = field(default_factory=lambda: float(_env("MAX_REQUESTS_PER_SECOND", "0")))


def load() -> Settings:
    """Settings from the environment."""
    return Settings()
