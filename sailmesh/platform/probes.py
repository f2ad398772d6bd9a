"""A LocalWorkload's readinessProbe (Kubernetes' fields, httpGet and tcpSocket) rewritten the way Istio's injector
rewrites app probes: the sidecar's agent runs it against the app directly (the app port, not through Envoy), and
the sidecar's readiness (15021) includes it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sailmesh.errors import PlatformError

# Kubernetes' defaults (core/v1 Probe)
DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
            "failureThreshold": 3}


@dataclass(frozen=True)
class Probe:
    """A readiness probe whose port is the app's real port (containerPort or name resolved)."""

    kind: str  # httpGet | tcpSocket
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    def to_json(self) -> str:
        """What the agent's --readiness-probe takes."""
        return json.dumps({"kind": self.kind, "port": self.port, "path": self.path, "scheme": self.scheme,
                           "headers": [list(h) for h in self.headers], "timeoutSeconds": self.timeout_s})


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


def parse(spec: Any, named: Mapping[str, int], app_ports: Mapping[int, int], where: str) -> Probe | None:
    """The probe of `spec` (None when absent); PlatformError for what cannot be run here (exec, grpc)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise PlatformError(f"{where} must be an object")
    handlers = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in spec]
    if len(handlers) != 1:
        raise PlatformError(f"{where}: needs exactly one of httpGet, tcpSocket")
    kind = handlers[0]
    if kind not in ("httpGet", "tcpSocket"):
        raise PlatformError(f"{where}.{kind}: not supported by the embedded platform (use httpGet or tcpSocket)")
    h = spec[kind] if isinstance(spec[kind], dict) else {}
    timing = {k: spec.get(k, d) for k, d in DEFAULTS.items()}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in timing.values()):
        raise PlatformError(f"{where}: {', '.join(DEFAULTS)} must be integers >= 0")
    scheme = str(h.get("scheme", "HTTP")).upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise PlatformError(f"{where}.httpGet.scheme must be HTTP or HTTPS")
    headers = tuple((str(x.get("name", "")), str(x.get("value", ""))) for x in h.get("httpHeaders") or []
                    if isinstance(x, dict))
    return Probe(kind=kind, port=_port(h.get("port"), named, app_ports, f"{where}.{kind}"),
                 path=str(h.get("path") or "/"), scheme=scheme, headers=headers,
                 initial_delay_s=float(timing["initialDelaySeconds"]), period_s=float(timing["periodSeconds"] or 10),
                 timeout_s=float(timing["timeoutSeconds"] or 1), success_threshold=int(timing["successThreshold"] or 1),
                 failure_threshold=int(timing["failureThreshold"] or 3))
