"""Sidecar injection as Istio's injector does it: the decision, the injected pod, and the JSON patch between them.

Pure functions of (pod, namespace, InjectionConfig): the mutating webhook (server.py) and `sailmesh kube-inject`
(offline) share them, so both produce the same pod. What is added follows Istio's sidecar template in its
native-sidecar form (Kubernetes >= 1.29):

- init container `istio-init` with Istio's `istio-iptables` arguments (outbound to 15001, inbound to 15006,
  the proxy's UID 1337 excluded, `traffic.sidecar.istio.io/*` annotations honoured), which the image's
  entrypoint runs as `sailmesh istio-iptables ...` (sailmesh/iptables); none with interceptionMode NONE;
- init container `istio-proxy` with `restartPolicy: Always` (a native sidecar: jobs finish, the app starts after
  the proxy is ready) running `sailmesh agent`, with the projected service-account token (audience `istio-ca`)
  and the mesh's root certificate (ConfigMap `istio-ca-root-cert`) mounted where Istio mounts them;
- Istio's volumes, annotations (`sidecar.istio.io/status`, `kubectl.kubernetes.io/default-container`,
  `prometheus.io/*`, `istio.io/rev`) and labels (`security.istio.io/tlsMode`, `service.istio.io/canonical-*`);
- app probes (httpGet, tcpSocket, grpc) rewritten to the agent's status port (`/app-health/<container>/<kind>`),
  the originals passed in `ISTIO_KUBE_APP_PROBERS`, unless `sidecar.istio.io/rewriteAppHTTPProbers: "false"`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sailmesh import __version__
from sailmesh.api import proxyconfig
from sailmesh.api.resource import Resource
from sailmesh.settings import ControlPlanePorts, MeshDefaults, ProxyPorts

Obj = dict[str, Any]

STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT = "sidecar.istio.io/inject"  # a pod label (preferred) or annotation (deprecated): "true" / "false"
REWRITE_PROBES = "sidecar.istio.io/rewriteAppHTTPProbers"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"
REV_LABEL = "istio.io/rev"
NS_INJECTION_LABEL = "istio-injection"
PROXY_NAME, INIT_NAME = "istio-proxy", "istio-init"
TOKEN_DIR, TOKEN_FILE = "/var/run/secrets/tokens", "istio-token"
ROOT_CERT_DIR, ROOT_CERT_CONFIGMAP = "/var/run/secrets/istio", "istio-ca-root-cert"
TOKEN_AUDIENCE = "istio-ca"
# Istio's injector skips these namespaces whatever the labels say (its webhook's ignored namespaces).
IGNORED_NAMESPACES = ("kube-system", "kube-public")
_TRUE, _FALSE = ("y", "yes", "true", "on"), ("n", "no", "false", "off")


@dataclass(frozen=True)
class InjectionConfig:
    """What the injected proxy needs to know (Istio's `values.global.proxy` and the discovery address)."""

    image: str = f"sailmesh/sailmesh:{__version__}"  # an image whose entrypoint is `sailmesh` (docs/kubernetes.md)
    revision: str = "default"
    discovery_address: str = f"istiod.istio-system.svc:{ControlPlanePorts().xds_tls}"
    ca_address: str = ""  # "" = the discovery host, the CA port (15013) for the first CSR
    trust_domain: str = MeshDefaults().trust_domain
    cluster_id: str = "Kubernetes"
    include_ip_ranges: str = "*"
    exclude_ip_ranges: str = ""
    include_inbound_ports: str = "*"
    exclude_inbound_ports: str = ""
    include_outbound_ports: str = ""
    exclude_outbound_ports: str = ""
    interception_mode: str = "REDIRECT"
    proxy_uid: int = 1337
    status_port: int = ProxyPorts().agent_metrics
    rewrite_probes: bool = True
    token_expiration_s: int = 43200
    # the mesh config's defaultConfig.proxyMetadata (a pod's `proxy.istio.io/config` proxyMetadata wins per key)
    proxy_metadata: tuple[tuple[str, str], ...] = ()
    # the ProxyConfig resources (oldest first) and the root namespace: a pod's proxy gets their `concurrency`
    proxy_configs: tuple[Resource, ...] = ()
    root_namespace: str = MeshDefaults().root_namespace
    mesh_concurrency: int | None = None  # the mesh config's defaultConfig.concurrency, below every ProxyConfig


PROXY_CONFIG = "proxy.istio.io/config"
DNS_CAPTURE = "ISTIO_META_DNS_CAPTURE"


def _proxy_config(annotations: Mapping[str, str]) -> Mapping[str, Any]:
    """The pod's `proxy.istio.io/config` (a ProxyConfig in YAML); {} when absent or not a mapping."""
    try:
        raw = yaml.safe_load(annotations.get(PROXY_CONFIG) or "{}")
    except yaml.YAMLError:
        return {}
    return raw if isinstance(raw, Mapping) else {}


def proxy_metadata(annotations: Mapping[str, str], cfg: InjectionConfig) -> dict[str, str]:
    """Istio's ProxyConfig.proxyMetadata for the pod: the mesh's defaultConfig, the pod annotation's keys over it."""
    out = dict(cfg.proxy_metadata)
    out.update(_strmap(_proxy_config(annotations).get("proxyMetadata")))
    return out


def interception_mode(annotations: Mapping[str, str], cfg: InjectionConfig) -> str:
    """`sidecar.istio.io/interceptionMode`, else the mesh's (REDIRECT)."""
    return annotations.get("sidecar.istio.io/interceptionMode", cfg.interception_mode)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _strmap(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


def injection_required(pod: Mapping[str, Any], namespace: str) -> tuple[bool, str]:
    """Whether the injector injects a pod the webhook was called for, and why (Istio's injectRequired).

    The namespace-level choice (`istio-injection`, `istio.io/rev`) is made by the webhook configuration's
    selectors before the API server calls the webhook; here: host-network pods and the ignored namespaces are
    never injected, an injected pod is not injected twice, and the pod's `sidecar.istio.io/inject` label (or,
    without it, the deprecated annotation) says no with false/no/off/n.
    """
    spec = pod.get("spec") or {}
    meta = _meta(pod)
    if spec.get("hostNetwork"):
        return False, "hostNetwork pod"
    if namespace in IGNORED_NAMESPACES:
        return False, f"namespace {namespace} is ignored"
    if STATUS_ANNOTATION in _strmap(meta.get("annotations")):
        return False, "already injected"
    labels, annotations = _strmap(meta.get("labels")), _strmap(meta.get("annotations"))
    said = _flag(labels.get(INJECT)) if INJECT in labels else _flag(annotations.get(INJECT))
    if said is False:
        return False, f"{INJECT}=false"
    return True, "policy enabled"


def namespace_selects(ns_labels: Mapping[str, str], pod_labels: Mapping[str, str], revision: str = "default"
                      ) -> bool:
    """Istio's precedence for which pods its (default-revision) webhooks receive, as its docs' table says:

    a namespace `istio-injection` label wins over `istio.io/rev` on the namespace; `istio-injection=enabled`
    injects unless the pod says `sidecar.istio.io/inject=false`; a namespace `istio.io/rev=<rev>` injects the
    same way; with neither on the namespace, a pod label `istio.io/rev=<rev>` or `sidecar.istio.io/inject=true`
    opts in. (The webhook configuration encodes exactly this in its selectors: install/manifests.py.)
    """
    pod_inject = pod_labels.get(INJECT)
    if NS_INJECTION_LABEL in ns_labels:
        return ns_labels[NS_INJECTION_LABEL] == "enabled" and pod_inject != "false"
    if REV_LABEL in ns_labels:
        return ns_labels[REV_LABEL] == revision and pod_inject != "false"
    if REV_LABEL in pod_labels:
        return pod_labels[REV_LABEL] == revision and pod_inject != "false"
    return pod_inject == "true"


def workload_name(pod: Mapping[str, Any]) -> str:
    """The deployment (or other controller) a pod belongs to, as Istio's GetDeployMetaFromPod finds it."""
    meta = _meta(pod)
    labels = _strmap(meta.get("labels"))
    for ref in meta.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or not ref.get("controller", True):
            continue
        name = str(ref.get("name") or "")
        if ref.get("kind") == "ReplicaSet" and labels.get("pod-template-hash"):
            return name.removesuffix("-" + labels["pod-template-hash"])
        if name:
            return name
    generate = str(meta.get("generateName") or "")
    return generate.rstrip("-") if generate else str(meta.get("name") or "")


def canonical_labels(labels: Mapping[str, str], workload: str) -> tuple[str, str]:
    """Istio's canonical service name and revision for a workload's labels."""
    name = (labels.get(CANONICAL_NAME) or labels.get("app.kubernetes.io/name") or labels.get("app") or workload)
    rev = labels.get(CANONICAL_REVISION) or labels.get("app.kubernetes.io/version") or labels.get("version") \
        or "latest"
    return name, rev


def _exclude_inbound(status_port: int, excluded: str) -> str:
    """Istio's excludeInboundPort: the status port appended to the user's list unless already in it."""
    port = str(status_port)
    ports = [p.strip() for p in excluded.split(",") if p.strip()]
    if port in ports:
        return excluded
    return ",".join([*ports, port])


def iptables_args(annotations: Mapping[str, str], cfg: InjectionConfig) -> list[str]:
    """istio-init's arguments, as Istio's sidecar template writes them; with DNS capture (proxyMetadata
    ISTIO_META_DNS_CAPTURE=true) also `--redirect-dns`, which Istio's istio-iptables reads from that variable in
    the init container's environment (set too, see init_container): the flag makes it visible in the pod spec."""
    def ann(key: str, default: str) -> str:
        return annotations.get(key, default)

    args = ["istio-iptables", "-p", str(ProxyPorts().outbound), "-z", str(ProxyPorts().inbound),
            "-u", str(cfg.proxy_uid), "-m", ann("sidecar.istio.io/interceptionMode", cfg.interception_mode),
            "-i", ann("traffic.sidecar.istio.io/includeOutboundIPRanges", cfg.include_ip_ranges),
            "-x", ann("traffic.sidecar.istio.io/excludeOutboundIPRanges", cfg.exclude_ip_ranges),
            "-b", ann("traffic.sidecar.istio.io/includeInboundPorts", cfg.include_inbound_ports), "-d"]
    status = int(ann("status.sidecar.istio.io/port", str(cfg.status_port)) or 0)
    excluded = ann("traffic.sidecar.istio.io/excludeInboundPorts", cfg.exclude_inbound_ports)
    extra = _exclude_inbound(status, excluded) if status else excluded
    args.append(f"15090,15021,{extra}" if extra else "15090,15021")
    key = "traffic.sidecar.istio.io/includeOutboundPorts"
    if key in annotations or cfg.include_outbound_ports:
        args += ["-q", ann(key, cfg.include_outbound_ports)]
    key = "traffic.sidecar.istio.io/excludeOutboundPorts"
    if key in annotations or cfg.exclude_outbound_ports:
        args += ["-o", ann(key, cfg.exclude_outbound_ports)]
    key = "traffic.sidecar.istio.io/kubevirtInterfaces"
    if key in annotations:
        args += ["-k", annotations[key]]
    if proxy_metadata(annotations, cfg).get(DNS_CAPTURE, "").lower() == "true":
        args.append("--redirect-dns")
    args.append("--log_output_level=default:info")
    return args


def _port_number(port: Any, container: Mapping[str, Any]) -> Any:
    """A named container port as its number (the prober runs in the agent, which does not know the names)."""
    if isinstance(port, str) and not port.isdigit():
        for p in container.get("ports") or ():
            if isinstance(p, Mapping) and p.get("name") == port:
                return p.get("containerPort")
    return int(port) if isinstance(port, str) else port


_PROBES = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))


def rewrite_probes(containers: list[Obj], status_port: int) -> dict[str, Obj]:
    """Rewrite each container's httpGet/tcpSocket/grpc probes to the status port (in place); returns the
    probers for ISTIO_KUBE_APP_PROBERS (path -> what the agent runs against the app), as Istio's injector."""
    probers: dict[str, Obj] = {}
    for c in containers:
        for field, suffix in _PROBES:
            probe = c.get(field)
            if not isinstance(probe, dict):
                continue
            prober: Obj = {}
            if isinstance(probe.get("httpGet"), dict):
                get = dict(probe["httpGet"])
                get["port"] = _port_number(get.get("port"), c)
                prober["httpGet"] = get
            elif isinstance(probe.get("tcpSocket"), dict):
                prober["tcpSocket"] = {"port": _port_number(probe["tcpSocket"].get("port"), c)}
            elif isinstance(probe.get("grpc"), dict):
                prober["grpc"] = dict(probe["grpc"])
            else:
                continue  # exec probes run in the app's container: nothing to rewrite
            if probe.get("timeoutSeconds"):
                prober["timeoutSeconds"] = probe["timeoutSeconds"]
            path = f"/app-health/{c.get('name')}/{suffix}"
            probers[path] = prober
            for k in ("httpGet", "tcpSocket", "grpc"):
                probe.pop(k, None)
            probe["httpGet"] = {"path": path, "port": status_port, "scheme": "HTTP"}
    return probers


def _labels_arg(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if "," not in k + v and "=" not in k)


def _env(name: str, field_path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def proxy_container(pod: Mapping[str, Any], labels: Mapping[str, str], probers: Mapping[str, Obj],
                    workload: str, cfg: InjectionConfig, namespace: str = "default") -> Obj:
    """The native sidecar: `sailmesh agent` as an init container with restartPolicy Always."""
    ports = ProxyPorts()
    annotations = _strmap(_meta(pod).get("annotations"))
    command = ["sailmesh", "agent", "--type", "sidecar", "--ip", "$(INSTANCE_IP)", "--name", "$(POD_NAME)",
               "--namespace", "$(POD_NAMESPACE)", "--service-account", "$(SERVICE_ACCOUNT)",
               "--labels", _labels_arg(labels), "--xds-address", cfg.discovery_address, "--xds-tls",
               "--ca-root", f"{ROOT_CERT_DIR}/root-cert.pem", "--token-file", f"{TOKEN_DIR}/{TOKEN_FILE}",
               "--state-dir", "/etc/istio/proxy"]
    if cfg.ca_address:
        command += ["--ca-address", cfg.ca_address]
    # Istio's EffectiveProxyConfig (mesh defaultConfig, ProxyConfigs, the pod's proxy.istio.io/config), applied as
    # the pod is made
    workers = proxyconfig.concurrency(cfg.proxy_configs, namespace, labels, cfg.root_namespace,
                                      _proxy_config(annotations), cfg.mesh_concurrency)
    if workers is not None:
        command += ["--concurrency", str(workers)]
    app_ports = [p for c in (pod.get("spec") or {}).get("containers") or () for p in (c or {}).get("ports") or ()]
    env = [
        _env("POD_NAME", "metadata.name"), _env("POD_NAMESPACE", "metadata.namespace"),
        _env("INSTANCE_IP", "status.podIP"), _env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _env("HOST_IP", "status.hostIP"),
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(app_ports, separators=(",", ":"))},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(
            str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or ())},
        {"name": "ISTIO_META_CLUSTER_ID", "value": cfg.cluster_id},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": interception_mode(annotations, cfg)},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload},
        {"name": "TRUST_DOMAIN", "value": cfg.trust_domain},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(proxy_metadata(annotations, cfg).items())]
    if probers:
        env.append({"name": "ISTIO_KUBE_APP_PROBERS",
                    "value": json.dumps(probers, separators=(",", ":"), sort_keys=True)})
    return {
        "name": PROXY_NAME, "image": cfg.image, "command": command, "restartPolicy": "Always",
        "ports": [{"containerPort": ports.stats, "name": "http-envoy-prom", "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": ports.health}, "periodSeconds": 15,
                           "timeoutSeconds": 3, "failureThreshold": 4},
        "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": ports.health}, "periodSeconds": 1,
                         "timeoutSeconds": 3, "failureThreshold": 600},
        "securityContext": proxy_security_context(interception_mode(annotations, cfg), cfg),
        "volumeMounts": [
            {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
            {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
            {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
            {"name": "istiod-ca-cert", "mountPath": ROOT_CERT_DIR},
            {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-token", "mountPath": TOKEN_DIR},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
        ],
    }


def proxy_security_context(mode: str, cfg: InjectionConfig) -> Obj:
    """Istio's template: the proxy as UID 1337 without capabilities; in TPROXY mode as root in group 1337 with
    NET_ADMIN (Envoy's transparent listeners set IP_TRANSPARENT; istio-iptables then excludes the proxy by GID)."""
    if mode == "TPROXY":
        return {"allowPrivilegeEscalation": False, "privileged": False,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "readOnlyRootFilesystem": True,
                "runAsUser": 0, "runAsGroup": cfg.proxy_uid, "runAsNonRoot": False}
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsUser": cfg.proxy_uid, "runAsGroup": cfg.proxy_uid,
            "runAsNonRoot": True}


def init_container(annotations: Mapping[str, str], cfg: InjectionConfig) -> Obj:
    """istio-init: the capture rules (needs NET_ADMIN/NET_RAW, runs as root, as Istio's); the proxyMetadata in
    its environment, as Istio's template puts it there."""
    metadata = proxy_metadata(annotations, cfg)
    return {
        "name": INIT_NAME, "image": cfg.image, "args": iptables_args(annotations, cfg),
        **({"env": [{"name": k, "value": v} for k, v in sorted(metadata.items())]} if metadata else {}),
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": False, "runAsGroup": 0, "runAsNonRoot": False,
                            "runAsUser": 0},
    }


def volumes(cfg: InjectionConfig) -> list[Obj]:
    """Istio's sidecar volumes: sockets, certificates, Envoy's scratch space, pod info, token, root cert."""
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": cfg.token_expiration_s, "path": TOKEN_FILE}}]}},
        {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CERT_CONFIGMAP}},
    ]


# Istio's per-pod proxy annotations the injector acts on -> (resources section, key) or the agent flag
_RESOURCES = {"sidecar.istio.io/proxyCPU": ("requests", "cpu"), "sidecar.istio.io/proxyMemory": ("requests", "memory"),
              "sidecar.istio.io/proxyCPULimit": ("limits", "cpu"),
              "sidecar.istio.io/proxyMemoryLimit": ("limits", "memory")}
# Istio injection annotations sailmesh's injector accepts but does not act on: said in the admission response's
# warnings (kubectl prints them) and by kube-inject, never silently ignored.
NOT_ACTED_ON = ("proxy.istio.io/config", "inject.istio.io/templates", "sidecar.istio.io/userVolume",
                "sidecar.istio.io/userVolumeMount", "sidecar.istio.io/bootstrapOverride",
                "sidecar.istio.io/componentLogLevel", "sidecar.istio.io/statsInclusionPrefixes",
                "sidecar.istio.io/statsInclusionSuffixes", "sidecar.istio.io/statsInclusionRegexps",
                "sidecar.istio.io/agentLogLevel", "sidecar.istio.io/enableCoreDump",
                "status.sidecar.istio.io/port", "readiness.status.sidecar.istio.io/initialDelaySeconds",
                "readiness.status.sidecar.istio.io/periodSeconds",
                "readiness.status.sidecar.istio.io/failureThreshold", "proxy.istio.io/overrides")


def apply_proxy_annotations(proxy: Obj, annotations: Mapping[str, str]) -> None:
    """Istio's proxyImage, proxyCPU/Memory(+Limit) and logLevel annotations on the injected proxy."""
    if annotations.get("sidecar.istio.io/proxyImage"):
        proxy["image"] = annotations["sidecar.istio.io/proxyImage"]
    for key, (section, resource) in _RESOURCES.items():
        if annotations.get(key):
            proxy["resources"][section][resource] = annotations[key]
    if annotations.get("sidecar.istio.io/logLevel"):
        proxy["command"] += ["--log-level", annotations["sidecar.istio.io/logLevel"]]


# proxyMetadata keys something in sailmesh reads (istio-iptables and the agent); the others reach the containers'
# environment but nothing acts on them
ACTED_ON_METADATA = (DNS_CAPTURE, "REDIRECT_DNS", "CAPTURE_ALL_DNS", "ISTIO_META_INTERCEPTION_MODE",
                     "ISTIO_META_DNS_AUTO_ALLOCATE")


def not_acted_on(pod: Mapping[str, Any], cfg: InjectionConfig | None = None) -> list[str]:
    """Warnings for the pod's Istio injection annotations that sailmesh accepts but does not act on
    (`proxy.istio.io/config`: all but its proxyMetadata and concurrency), and for proxyMetadata keys (the pod's and,
    with `cfg`, the mesh's) nothing reads."""
    annotations = _strmap(_meta(pod).get("annotations"))
    out = [f"proxyMetadata {k} is accepted, not acted on by sailmesh"
           for k in sorted(proxy_metadata(annotations, cfg or InjectionConfig())) if k not in ACTED_ON_METADATA]
    for k in NOT_ACTED_ON:
        if k not in annotations:
            continue
        if k == PROXY_CONFIG:
            fields = set(_proxy_config(annotations)) or {"?"}
            acted = sorted(fields & {"proxyMetadata", "concurrency"})
            if not fields - set(acted):
                continue
            out.append(f"annotation {k} is accepted, not acted on by sailmesh's injector"
                       + (f" (but its {' and '.join(acted)})" if acted else ""))
            continue
        out.append(f"annotation {k} is accepted, not acted on by sailmesh's injector")
    return out


def inject_pod(pod: Mapping[str, Any], cfg: InjectionConfig, workload: str = "", namespace: str = "") -> Obj:
    """The pod with the sidecar injected (a new object; the input is not changed); `namespace` when the pod does
    not name its own (an admission request's)."""
    out: Obj = copy.deepcopy(dict(pod))
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    annotations = _strmap(meta.get("annotations"))
    labels = _strmap(meta.get("labels"))
    workload = workload or workload_name(out)
    containers: list[Obj] = [c for c in spec.get("containers") or () if isinstance(c, dict)]
    rewrite = cfg.rewrite_probes and _flag(annotations.get(REWRITE_PROBES)) is not False
    probers = rewrite_probes(containers, cfg.status_port) if rewrite else {}
    name, rev = canonical_labels(labels, workload)
    labels.setdefault(TLS_MODE_LABEL, "istio")
    labels[CANONICAL_NAME], labels[CANONICAL_REVISION] = name, rev
    proxy = proxy_container(out, labels, probers, workload, cfg, str(meta.get("namespace") or namespace or "default"))
    apply_proxy_annotations(proxy, annotations)
    # Istio's template: no istio-init when the interception mode is NONE (nothing to capture)
    capture = interception_mode(annotations, cfg) != "NONE"
    spec["initContainers"] = [*([init_container(annotations, cfg)] if capture else []), proxy,
                              *[c for c in spec.get("initContainers") or () if c.get("name") not in (
                                  INIT_NAME, PROXY_NAME)]]
    existing = {v.get("name") for v in spec.get("volumes") or ()}
    added = [v for v in volumes(cfg) if v["name"] not in existing]
    spec["volumes"] = [*(spec.get("volumes") or ()), *added]
    status = {"initContainers": [INIT_NAME, PROXY_NAME] if capture else [PROXY_NAME], "containers": None,
              "volumes": [v["name"] for v in volumes(cfg)], "imagePullSecrets": None, "revision": cfg.revision}
    if containers:
        annotations.setdefault("kubectl.kubernetes.io/default-container", str(containers[0].get("name")))
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", str(containers[0].get("name")))
    annotations.setdefault("prometheus.io/path", "/stats/prometheus")
    annotations.setdefault("prometheus.io/port", str(cfg.status_port))
    annotations.setdefault("prometheus.io/scrape", "true")
    annotations["istio.io/rev"] = cfg.revision
    annotations[STATUS_ANNOTATION] = json.dumps(status, separators=(",", ":"))
    meta["annotations"], meta["labels"] = annotations, labels
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(before: Any, after: Any, path: str = "") -> list[Obj]:
    """An RFC 6902 patch turning `before` into `after`: objects are compared key by key, lists replaced whole."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        ops: list[Obj] = []
        for k in before:
            if k not in after:
                ops.append({"op": "remove", "path": f"{path}/{_escape(str(k))}"})
        for k, v in after.items():
            p = f"{path}/{_escape(str(k))}"
            if k not in before:
                ops.append({"op": "add", "path": p, "value": v})
            elif before[k] != v:
                ops.extend(json_patch(before[k], v, p))
        return ops
    if before == after:
        return []
    return [{"op": "replace", "path": path, "value": after}]
