"""A LocalWorkload's readinessProbe, livenessProbe and startupProbe (Kubernetes' fields: httpGet, tcpSocket, grpc,
exec) rewritten the way Istio's injector rewrites app probes: the sidecar's agent serves each httpGet, tcpSocket and
grpc probe on its status port (15020) as `/app-health/<container>/readyz|livez|startupz` and runs it against the
app directly (the app port, not through Envoy); the sidecar's readiness (15021) includes the readinessProbe. An
exec probe is not rewritten (Istio leaves it to the kubelet): the platform runs its command as a kubelet would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sailmesh.errors import PlatformError

# Kubernetes' defaults (core/v1 Probe)
DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
            "failureThreshold": 3}
HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
# Kubernetes' probe-level grace (ProbeTerminationGracePeriod, GA in 1.28): the seconds between SIGTERM and SIGKILL
# when a liveness or startup probe fails, instead of the pod's terminationGracePeriodSeconds
GRACE = "terminationGracePeriodSeconds"
# Istio's rewritten probe paths on the agent's status port (pilot-agent's /app-health/<container>/<probe>)
APP_HEALTH = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}


def app_health_path(container: str, field: str) -> str:
    """The path Istio's injector gives the rewritten probe `field` of `container`, e.g. /app-health/web/livez."""
    return f"/app-health/{container}/{APP_HEALTH[field]}"


@dataclass(frozen=True)
class Probe:
    """A readiness probe whose port is the app's real port (containerPort or name resolved)."""

    kind: str  # httpGet | tcpSocket | grpc | exec
    port: int = 0  # exec: none
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    command: tuple[str, ...] = ()  # exec.command
    service: str = ""  # grpc.service: the name sent in grpc.health.v1 HealthCheckRequest ("" = the server)
    termination_grace_s: float | None = None  # terminationGracePeriodSeconds (None: the pod's grace period)

    @property
    def rewritten(self) -> bool:
        """Istio's injector rewrites httpGet, tcpSocket and grpc probes to the agent; exec stays the kubelet's."""
        return self.kind != "exec"

    def to_json(self) -> str:
        """What the agent's --readiness-probe takes."""
        return json.dumps({"kind": self.kind, "port": self.port, "path": self.path, "scheme": self.scheme,
                           "headers": [list(h) for h in self.headers], "timeoutSeconds": self.timeout_s,
                           "service": self.service})

    def prober(self) -> dict[str, Any]:
        """The original probe as Istio's injector hands it to the agent (one ISTIO_KUBE_APP_PROBERS value), its port
        the app's real port."""
        if self.kind == "tcpSocket":
            return {"tcpSocket": {"port": self.port}, "timeoutSeconds": self.timeout_s}
        if self.kind == "grpc":
            return {"grpc": {"port": self.port, "service": self.service}, "timeoutSeconds": self.timeout_s}
        return {"httpGet": {"path": self.path, "port": self.port, "scheme": self.scheme,
                            "httpHeaders": [{"name": n, "value": v} for n, v in self.headers]},
                "timeoutSeconds": self.timeout_s}


def _port(value: Any, named: Mapping[str, int], app_ports: Mapping[int, int], where: str) -> int:
    if isinstance(value, str) and not value.isdigit():
        if value not in named:
            raise PlatformError(f"{where}.port: no container port named {value!r}")
        value = named[value]
    try:
        port = int(value)
    except (TypeError, ValueError) as e:
        raise PlatformError(f"{where}.port must be a port number or a container port name") from e
    if not 0 < port < 65536:
        raise PlatformError(f"{where}.port {port} is out of range")
    return app_ports.get(port, port)  # a declared containerPort is served by the app on its app port


def parse(spec: Any, named: Mapping[str, int], app_ports: Mapping[int, int], where: str,
          field: str = "readinessProbe") -> Probe | None:
    """The probe of `spec` (None when absent); PlatformError for a malformed probe and for fields this platform
    does not act on (never accepted silently)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise PlatformError(f"{where} must be an object")
    unknown = sorted(set(spec) - set(HANDLERS) - set(DEFAULTS) - {GRACE})
    if unknown:
        raise PlatformError(f"{where}: not supported by the embedded platform: {', '.join(unknown)}")
    handlers = [k for k in HANDLERS if k in spec]
    if len(handlers) != 1:
        raise PlatformError(f"{where}: needs exactly one of {', '.join(HANDLERS)}")
    kind = handlers[0]
    h = spec[kind] if isinstance(spec[kind], dict) else {}
    timing = {k: spec.get(k, d) for k, d in DEFAULTS.items()}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in timing.values()):
        raise PlatformError(f"{where}: {', '.join(DEFAULTS)} must be integers >= 0")
    if field != "readinessProbe" and timing["successThreshold"] not in (0, 1):
        # Kubernetes' validation: "Must be 1 for liveness and startup"
        raise PlatformError(f"{where}.successThreshold must be 1 for a {field}")
    extra: dict[str, Any] = {}
    if GRACE in spec:
        grace = spec[GRACE]
        # Kubernetes' validation (validateProbe and the readiness rule of validateContainers), its messages
        if field == "readinessProbe":
            raise PlatformError(f"{where}.{GRACE}: must not be set for readinessProbes")
        if not isinstance(grace, int) or isinstance(grace, bool) or grace <= 0:
            raise PlatformError(f"{where}.{GRACE}: must be greater than 0")
        extra["termination_grace_s"] = float(grace)
    if kind == "exec":
        command = h.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise PlatformError(f"{where}.exec.command must be a non-empty list of strings")
        extra["command"] = tuple(command)
    elif kind == "grpc":
        number = h.get("port")
        if not isinstance(number, int) or isinstance(number, bool):  # Kubernetes: a number, no named port
            raise PlatformError(f"{where}.grpc.port must be a port number (gRPC probes take no port names)")
        service = h.get("service", "")
        if not isinstance(service, str):
            raise PlatformError(f"{where}.grpc.service must be a string")
        extra["service"] = service
    scheme = str(h.get("scheme", "HTTP")).upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise PlatformError(f"{where}.httpGet.scheme must be HTTP or HTTPS")
    headers = tuple((str(x.get("name", "")), str(x.get("value", ""))) for x in h.get("httpHeaders") or []
                    if isinstance(x, dict))
    port = 0 if kind == "exec" else _port(h.get("port"), named, app_ports, f"{where}.{kind}")
    return Probe(kind=kind, port=port, **extra,
                 path=str(h.get("path") or "/"), scheme=scheme, headers=headers,
                 initial_delay_s=float(timing["initialDelaySeconds"]), period_s=float(timing["periodSeconds"] or 10),
                 timeout_s=float(timing["timeoutSeconds"] or 1), success_threshold=int(timing["successThreshold"] or 1),
                 failure_threshold=int(timing["failureThreshold"] or 3))
