"""Where the control plane reads config and listens: ControlPlaneOptions, filled by `sailmesh controlplane`'s flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sailmesh.ca.limits import CSR_PER_IDENTITY
from sailmesh.webhook.inject import InjectionConfig


@dataclass
class ControlPlaneOptions:
    """Where the control plane reads config and listens."""

    config_dirs: Sequence[str] = ()
    workload_file: str = ""
    host: str = "127.0.0.1"
    xds_port: int = 15010
    http_port: int = 15014
    mesh_config_file: str = ""  # Istio's mesh config file (`--meshConfig`); the ConfigMap istio overlays it
    xds_tls_port: int = 15012  # ADS (client certificate required) + certificate renewals over TLS (0 = any)
    xds_plaintext: bool = False  # also serve ADS in plaintext on 127.0.0.1:xds_port (debugging only)
    ca_port: int = 15013  # the certificate service alone, TLS without client certificates: first CSRs (0 = any)
    state_dir: str = ""  # the CA's root, join tokens and the API token ("" = ephemeral, for tests)
    cacerts_dir: str = ""  # a plug-in CA in Istio's cacerts layout instead of the self-signed root
    min_cert_ttl_s: float = 60.0  # the shortest certificate the CA signs (tests lower it)
    dns_port: int | None = None  # the mesh's DNS (UDP+TCP, controlplane/dns.py) on host:port; None: off, 0: any port
    csr_rate: float = CSR_PER_IDENTITY.rate  # CSRs a second per identity, bursts of 5x (0 = no limit)
    api_mtls_address: str = ""  # host:port of the HTTP API for remote callers over mTLS ("" = off; port 0 = any)
    kubeconfig: str = ""  # config and workloads also from this Kubernetes API server ("in-cluster": the pod's SA)
    kube_context: str | None = None  # the kubeconfig's context (None: its current-context)
    leader_lease_s: float = 15.0  # with kubeconfig: the replicas' Lease duration (client-go's 15 s; 0 = no election)
    # admission webhooks (validation + injection, TLS) on host:port; None: off, 0: any free port. With a
    # kubeconfig the caBundle is patched into the webhook configurations (controlplane/webhooks.py).
    webhook_port: int | None = None
    webhook_sans: tuple[str, ...] = ()  # more names/addresses for the webhook's serving certificate
    injection: InjectionConfig = field(default_factory=InjectionConfig)
