"""ProxyView from an xDS node: Istio's node id `type~ip~name.namespace~namespace.svc.domain` plus metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from sailmesh.errors import XdsError
from sailmesh.snapshot.model import ProxyView

PROXY_TYPES: tuple[Literal["sidecar", "router"], ...] = ("sidecar", "router")


def _labels(value: Any) -> dict[str, str]:
    """LABELS as a struct (dict) or a JSON object string, as Istio's agent and ours send it."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise XdsError(f"node metadata LABELS is not a JSON object: {e}") from e
    if value in (None, ""):
        return {}
    if not isinstance(value, Mapping):
        raise XdsError(f"node metadata LABELS must be a map, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def parse_app_ports(value: Any) -> dict[int, int]:
    """APP_PORTS "9080:41234,9443:41235" (containerPort:appPort) into a dict."""
    out: dict[int, int] = {}
    if value in (None, ""):
        return out
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        container, sep, app = part.partition(":")
        try:
            c, a = int(container), int(app if sep else container)
        except ValueError:
            raise XdsError(f"node metadata APP_PORTS: bad entry {part!r} (want containerPort:appPort)") from None
        if not (0 < c < 65536 and 0 < a < 65536):
            raise XdsError(f"node metadata APP_PORTS: port out of range in {part!r}")
        out[c] = a
    return out


def proxy_view_from_node(node_id: str, metadata: Mapping[str, Any] | None = None) -> ProxyView:
    """Who the proxy is. Metadata (NAMESPACE, NAME, LABELS, SERVICE_ACCOUNT, APP_PORTS) wins over the id.

    Raises XdsError for an id that is not Istio's four `~`-separated parts with a known proxy type.
    """
    meta = metadata or {}
    parts = node_id.split("~")
    if len(parts) != 4:
        raise XdsError(f"bad node id {node_id!r}: want type~ip~name.namespace~namespace.svc.domain")
    ptype, ip, pod, domain = parts
    proxy_type = str(meta.get("PROXY_TYPE") or ptype)
    if ptype not in PROXY_TYPES or proxy_type not in PROXY_TYPES:
        raise XdsError(f"bad node id {node_id!r}: proxy type {ptype!r} is not sidecar or router")
    if proxy_type != ptype:
        raise XdsError(f"node id type {ptype!r} disagrees with metadata PROXY_TYPE {proxy_type!r}")
    if not ip:
        raise XdsError(f"bad node id {node_id!r}: empty IP")
    pod_name, _, pod_ns = pod.rpartition(".") if "." in pod else (pod, "", "")
    namespace = str(meta.get("NAMESPACE") or pod_ns or domain.split(".", 1)[0])
    if not namespace:
        raise XdsError(f"bad node id {node_id!r}: no namespace (set metadata NAMESPACE)")
    view_type: Literal["sidecar", "router"] = "router" if ptype == "router" else "sidecar"
    return ProxyView(
        id=node_id,
        type=view_type,
        ip=ip,
        namespace=namespace,
        workload_name=str(meta.get("NAME") or pod_name),
        labels=MappingProxyType(_labels(meta.get("LABELS"))),
        service_account=str(meta.get("SERVICE_ACCOUNT") or "default"),
        app_ports=MappingProxyType(parse_app_ports(meta.get("APP_PORTS"))),
        metadata=MappingProxyType({str(k): v for k, v in meta.items() if isinstance(v, str)}),
        istio_version=str(meta.get("ISTIO_VERSION") or ""),
    )
