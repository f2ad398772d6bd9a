"""Checks for core Kubernetes kinds sailmesh reads (Service, ...) and the project's own LocalWorkload."""

from __future__ import annotations

from typing import Any

from sailmesh.api import meshconfig
from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_port, is_dns1123_label
from sailmesh.errors import ModelError, ParseError

SERVICE_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
LOCAL_WORKLOAD_FIELDS = frozenset({"command", "env", "serviceAccount", "ports", "replicas", "sidecar", "workdir",
                                   "readinessProbe", "livenessProbe", "startupProbe", "image", "locality",
                                   "network", "weight", "restartPolicy", "holdApplicationUntilProxyStarts",
                                   "socketActivation"})
LOCAL_PORT_FIELDS = frozenset({"name", "containerPort", "protocol"})
APP_PROTOCOLS = frozenset({"HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "UDP", "MONGO", "REDIS",
                           "MYSQL", "THRIFT"})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def check_service(sink: IssueSink, spec: Any) -> None:
    if not isinstance(spec, dict):
        sink.add("spec", "spec must be an object")
        return
    ports = spec.get("ports")
    if ports is not None and not isinstance(ports, list):
        sink.add("spec.ports", "ports must be a list")
        return
    ports = ports or []
    names: set[str] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            sink.add(pp, "port must be an object")
            continue
        if "port" not in p:
            sink.add(f"{pp}.port", "Required value")
        else:
            check_port(sink, f"{pp}.port", p["port"])
        tp = p.get("targetPort")
        if tp is not None and not (isinstance(tp, str) and is_dns1123_label(tp.lower())) and not _is_int(tp):
            sink.add(f"{pp}.targetPort", f"targetPort {tp!r} must be a port number or name")
        elif _is_int(tp):
            check_port(sink, f"{pp}.targetPort", tp)
        proto = p.get("protocol", "TCP")
        if not isinstance(proto, str) or proto not in SERVICE_PROTOCOLS:
            sink.add(f"{pp}.protocol", f'Unsupported value: "{proto}": supported values: "SCTP", "TCP", "UDP"')
        name = p.get("name")
        if name is not None:
            if not is_dns1123_label(name):
                sink.add(f"{pp}.name", f"invalid port name {name!r}: must be a DNS-1123 label")
            elif name in names:
                sink.add(f"{pp}.name", f"Duplicate value: {name!r}")
            else:
                names.add(name)
        elif len(ports) > 1:
            sink.add(f"{pp}.name", "Required value: port name is required when a Service has more than one port")
    selector = spec.get("selector")
    if selector is not None and not (isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())):
        sink.add("spec.selector", "selector must be a map of string labels")


def check_local_workload(sink: IssueSink, spec: Any) -> None:
    """The workload declaration of docs/architecture.md."""
    if not isinstance(spec, dict):
        sink.add("spec", "spec must be an object")
        return
    for k in spec:
        if k not in LOCAL_WORKLOAD_FIELDS:
            sink.add(f"spec.{k}", f'unknown field "spec.{k}"')
    cmd = spec.get("command")
    if cmd is None:
        sink.add("spec.command", "Required value")
    elif not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) and c for c in cmd):
        sink.add("spec.command", "command must be a non-empty list of non-empty strings")
    env = spec.get("env")
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str | int | float) and
                                                              not isinstance(v, bool) for v in env.values())):
        sink.add("spec.env", "env must be a map of names to string values")
    sa = spec.get("serviceAccount")
    if sa is not None and not is_dns1123_label(sa):
        sink.add("spec.serviceAccount", f"invalid service account name {sa!r}")
    replicas = spec.get("replicas", 1)
    if not _is_int(replicas) or replicas < 0:
        sink.add("spec.replicas", f"replicas must be an integer >= 0, got {replicas!r}")
    for k in ("sidecar", "socketActivation"):
        if k in spec and not isinstance(spec[k], bool):
            sink.add(f"spec.{k}", f"{k} must be true or false")
    for k in ("locality", "network"):  # as a WorkloadEntry's: region/zone/subzone, and the network name
        if k in spec and not isinstance(spec[k], str):
            sink.add(f"spec.{k}", f"{k} must be a string")
    weight = spec.get("weight", 1)
    if not _is_int(weight) or weight < 1:
        sink.add("spec.weight", f"weight must be an integer >= 1, got {weight!r}")
    ports = spec.get("ports", [])
    if not isinstance(ports, list):
        sink.add("spec.ports", "ports must be a list")
        return
    seen: set[Any] = set()
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            sink.add(pp, "port must be an object")
            continue
        for k in p:
            if k not in LOCAL_PORT_FIELDS:
                sink.add(f"{pp}.{k}", f'unknown field "{pp}.{k}"')
        if "containerPort" not in p:
            sink.add(f"{pp}.containerPort", "Required value")
        else:
            check_port(sink, f"{pp}.containerPort", p["containerPort"])
            cp = p["containerPort"]
            if isinstance(cp, int) and cp in seen:
                sink.add(f"{pp}.containerPort", f"Duplicate value: {cp}")
            if isinstance(cp, int):
                seen.add(cp)
        proto = p.get("protocol")
        if proto is not None and str(proto).upper() not in APP_PROTOCOLS:
            sink.add(f"{pp}.protocol", f"unknown protocol {proto!r}")


def check_metadata(sink: IssueSink, raw: dict[str, Any], namespaced: bool) -> None:
    """metadata.name (DNS-1123 subdomain), namespace (label), string labels/annotations."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        sink.add("metadata", "Required value: metadata with a name is required")
        return
    name = meta.get("name")
    if not name:
        sink.add("metadata.name", "Required value: name is required")
    elif not isinstance(name, str) or len(name) > 253 or not all(
            is_dns1123_label(part) for part in name.split(".")):
        sink.add("metadata.name", f"invalid name {name!r}: must be a lowercase RFC 1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and namespaced and not is_dns1123_label(ns):
        sink.add("metadata.namespace", f"invalid namespace {ns!r}: must be a lowercase RFC 1123 label")
    for f in ("labels", "annotations"):
        v = meta.get(f)
        if v is not None and not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
            sink.add(f"metadata.{f}", f"{f} must be a map of strings (quote numbers and booleans)")


def check_config_map(sink: IssueSink, raw: Any) -> None:
    data = raw.get("data") if isinstance(raw, dict) else None
    if data is not None and not isinstance(data, dict):
        sink.add("data", "data must be a map of strings")
        return
    for k, v in (data or {}).items():
        if not isinstance(v, str):
            sink.add(f"data.{k}", f"value must be a string, got {type(v).__name__} (quote numbers and booleans)")
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    text = (data or {}).get(meshconfig.MESH_KEY)
    if isinstance(meta, dict) and meta.get("name") == meshconfig.MESH_CONFIGMAP and isinstance(text, str):
        # Istio's mesh ConfigMap: a mesh config that does not parse never reaches the snapshot
        try:
            meshconfig.from_mapping(meshconfig.parse_yaml(text), "mesh")
        except (ModelError, ParseError) as e:
            sink.add(f"data.{meshconfig.MESH_KEY}", str(e).removeprefix("mesh: "))


def check_secret(sink: IssueSink, raw: Any) -> None:
    import base64
    import binascii

    data = raw.get("data") if isinstance(raw, dict) else None
    for k, v in (data if isinstance(data, dict) else {}).items():
        try:
            base64.b64decode(v if isinstance(v, str) else "!", validate=True)
        except (binascii.Error, ValueError):
            sink.add(f"data.{k}", "value must be base64 encoded (use stringData for plain text)")


def _check_pod_spec(sink: IssueSink, path: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        sink.add(path, "Required value: a pod spec with containers")
        return
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        sink.add(f"{path}.containers", "Required value: at least one container")
        return
    names: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            sink.add(cp, "container must be an object")
            continue
        name = c.get("name")
        if not is_dns1123_label(name):
            sink.add(f"{cp}.name", f"invalid container name {name!r}")
        elif name in names:
            sink.add(f"{cp}.name", f"Duplicate value: {name!r}")
        else:
            names.add(name)
        if not c.get("image"):
            sink.add(f"{cp}.image", "Required value")
        for j, port in enumerate(_list(c.get("ports"))):
            if isinstance(port, dict):
                check_port(sink, f"{cp}.ports[{j}].containerPort", port.get("containerPort"))


def check_pod(sink: IssueSink, raw: Any) -> None:
    _check_pod_spec(sink, "spec", raw.get("spec") if isinstance(raw, dict) else None)


def check_deployment(sink: IssueSink, raw: Any) -> None:
    spec = raw.get("spec") if isinstance(raw, dict) else None
    if not isinstance(spec, dict):
        sink.add("spec", "Required value")
        return
    replicas = spec.get("replicas", 1)
    if not _is_int(replicas) or replicas < 0:
        sink.add("spec.replicas", f"replicas must be an integer >= 0, got {replicas!r}")
    selector = spec.get("selector")
    match = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(match, dict) or not match:
        sink.add("spec.selector", "Required value: a label selector (matchLabels)")
    template = _dict(spec.get("template"))
    labels = _dict(_dict(template.get("metadata")).get("labels"))
    if isinstance(match, dict) and any(labels.get(k) != v for k, v in match.items()):
        sink.add("spec.template.metadata.labels", "`selector` does not match template `labels`")
    _check_pod_spec(sink, "spec.template.spec", template.get("spec"))
