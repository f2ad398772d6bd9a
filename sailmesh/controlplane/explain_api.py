"""`POST /api/v1/explain` and `GET /api/v1/authz`: `sailmesh explain` and `x authz check` walked by the control
plane, over the config dumps it builds anyway (and caches per config version), so the CLI loads neither the walk
nor Envoy's protos (0.3-0.5 CPU s per command in the CLI).

Explain request: {"proxy": NODE_ID, "target": ["GET", URL] | ["tcp://HOST:PORT"], "sni": "", "headers": {}, "adminPort":
15000}; the answer is the walk (sailmesh.explain.gather.walk), 400 for a request that cannot be walked (its reason),
409 when the control plane has no config for the proxy. Authz: ?proxyID=NODE_ID -> {"rules": [...]}.
The walk reads the source and destination Envoys' admin interfaces (loopback, as the CLI did) from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sailmesh.errors import PlatformError
from sailmesh.explain import explain_steps, gather
from sailmesh.settings import ProxyPorts

Answer = tuple[int, dict[str, Any]]


def _refused(message: str, status: int = 400) -> Answer:
    return status, {"errors": [message]}


RawDump = Callable[[str, str], Mapping[str, Any] | None]


def explain(body: Any, proxies: list[dict[str, Any]], dump: RawDump,
            admin: gather.Admin = gather.envoy_admin) -> Answer:
    """The walk the request asks for (blocking: run it in a worker thread); `dump` is the control plane's
    config_dump (None: no such proxy)."""
    if not isinstance(body, dict):
        return _refused("expected {\"proxy\": NODE_ID, \"target\": [METHOD, URL], \"headers\": {...}}")
    node_id, target, sni = body.get("proxy"), body.get("target"), body.get("sni", "")
    headers, port = body.get("headers", {}), body.get("adminPort", ProxyPorts().admin)
    if not isinstance(node_id, str) or not isinstance(target, list) or not all(isinstance(t, str) for t in target) \
            or not isinstance(sni, str) or not isinstance(headers, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()) \
            or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return _refused("expected proxy: string, target: [strings], sni: string, headers: {string: string}, "
                        "adminPort: a port number")
    if not any(p.get("proxy") == node_id for p in proxies):
        return _refused(f"{node_id!r} is not a connected proxy", 409)
    try:
        req = gather.request_from(target, sni, headers)
    except ValueError as e:
        return _refused(str(e))
    try:
        return 200, gather.walk(req, node_id, proxies, lambda n, t: gather.checked(n, dump(n, t)), admin, port)
    except PlatformError as e:
        return _refused(str(e), 409)


def authz_rules(node_id: str, dump: RawDump) -> Answer:
    """The RBAC rules of a proxy's inbound listeners, as `x authz check` shows them."""
    try:
        listeners = gather.checked(node_id, dump(node_id, "listeners")).get("listeners", {})
    except PlatformError as e:
        return _refused(str(e), 409)
    return 200, {"rules": explain_steps.rbac_rules(listeners)}
