"""What `sailmesh install` / `manifest generate` produce for a profile: Istio's objects with Istio's names.

Profiles (Istio's): `minimal` = CRDs + the control plane (istiod); `default` = minimal + the ingress gateway;
`demo` = default + the egress gateway, access logs on. The control plane is a Deployment `istiod` running
`sailmesh controlplane --kubeconfig in-cluster`, behind a Service `istiod` with istiod's ports (15010 grpc-xds,
15012 https-dns, 443 -> 15017 https-webhook, 15014 http-monitoring) plus sailmesh's 15013 (first CSRs). The webhook
configurations are Istio's: `istio-validator-istio-system` (failurePolicy Ignore until the control plane has
patched its caBundle) and `istio-sidecar-injector` with Istio's four selector pairs for the default revision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from sailmesh import __version__
from sailmesh.install.crds import istio_crds
from sailmesh.settings import ControlPlanePorts, ProxyPorts
from sailmesh.webhook.inject import INJECT, NS_INJECTION_LABEL, REV_LABEL, InjectionConfig, proxy_container, volumes

Obj = dict[str, Any]
PROFILES = ("minimal", "default", "demo")
ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io")


@dataclass(frozen=True)
class Values:
    """The install's settings (the Helm chart's values.yaml has the same names)."""

    profile: str = "default"
    namespace: str = "istio-system"
    image: str = f"sailmesh/sailmesh:{__version__}"  # the control plane's and the proxies' image
    revision: str = "default"
    webhook_url: str = ""  # "": the API server calls the webhooks through Service istiod; else this base URL
    ingress_gateway: bool = True
    egress_gateway: bool = False
    access_log: bool = False
    # extra environment of the control plane's container (Istio's `values.pilot.env`, e.g. PILOT_ENABLE_STATUS)
    pilot_env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_profile(cls, profile: str, **over: Any) -> Values:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        base = cls(profile=profile, ingress_gateway=profile != "minimal", egress_gateway=profile == "demo",
                   access_log=profile == "demo")
        return replace(base, **over)


def _meta(name: str, ns: str = "", labels: dict[str, str] | None = None) -> Obj:
    m: Obj = {"name": name}
    if ns:
        m["namespace"] = ns
    if labels:
        m["labels"] = labels
    return m


def _istiod_labels(v: Values) -> dict[str, str]:
    return {"app": "istiod", "istio": "pilot", "istio.io/rev": v.revision, "install.operator.istio.io/owning-resource":
            "sailmesh", "operator.istio.io/component": "Pilot"}


def rbac(v: Values) -> list[Obj]:
    """istiod's ServiceAccount, ClusterRole (read the mesh's inputs, write webhooks' caBundle, root-cert
    ConfigMaps, token reviews, leases, Gateway API status, gateways for Gateways), Role (its namespace's
    Secrets: the CA root) and their bindings."""
    ns, labels = v.namespace, {"app": "istiod", "istio.io/rev": v.revision}
    name = f"istiod-clusterrole-{ns}"
    rules = [
        {"apiGroups": list(ISTIO_GROUPS), "resources": ["*"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": list(ISTIO_GROUPS), "resources": ["*/status"], "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["pods", "nodes", "services", "namespaces", "endpoints", "secrets"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
         "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "list", "watch", "create", "update"]},
        # the Gateway API: read, status writes, the default GatewayClass (Istio's istiod ClusterRole) ...
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*"],
         "verbs": ["get", "watch", "list", "update", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gatewayclasses"],
         "verbs": ["create", "update", "patch", "delete"]},
        # ... and a gateway per Gateway (Istio's istiod-gateway-controller ClusterRole)
        {"apiGroups": ["apps"], "resources": ["deployments"],
         "verbs": ["get", "watch", "list", "update", "patch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["services", "serviceaccounts"],
         "verbs": ["get", "watch", "list", "update", "patch", "create", "delete"]},
        # the parametersRef ConfigMap's horizontalPodAutoscaler / podDisruptionBudget (Istio's same ClusterRole)
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
         "verbs": ["get", "watch", "list", "update", "patch", "create", "delete"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"],
         "verbs": ["get", "watch", "list", "update", "patch", "create", "delete"]},
    ]
    role = f"istiod-{ns}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("istiod", ns, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(name, "", labels),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(name, "", labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": "istiod", "namespace": ns}]},
        # Secrets in its own namespace only: the replicas' CA root istio-ca-secret (Istio's istiod Role)
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(role, ns, labels),
         "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "verbs": ["create", "get", "watch", "list", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(role, ns, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": "istiod", "namespace": ns}]},
    ]


def mesh_config(v: Values) -> Obj:
    """ConfigMap `istio` (key `mesh`): the mesh config the control plane and proxies read."""
    # (Istio's chart also writes defaultConfig.discoveryAddress: here the injector's --injection-discovery-address
    # tells proxies where the control plane is, and the mesh config would only report the field as not acted on)
    mesh: Obj = {"rootNamespace": v.namespace, "trustDomain": "cluster.local"}
    mesh["accessLogFile"] = "/dev/stdout" if v.access_log else ""  # Istio's default "": no access log
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta("istio", v.namespace, {"app": "istiod", "istio.io/rev": v.revision}),
            "data": {"mesh": json.dumps(mesh, indent=2, sort_keys=True)}}


def istiod(v: Values) -> list[Obj]:
    """The control plane's Deployment and Service."""
    p = ControlPlanePorts()
    labels = _istiod_labels(v)
    command = ["sailmesh", "controlplane", "--kubeconfig", "in-cluster", "--host", "0.0.0.0",
               "--state-dir", "/var/lib/sailmesh", "--webhook-port", str(p.webhook),
               "--webhook-san", f"istiod.{v.namespace}.svc", "--proxy-image", v.image,
               "--injection-discovery-address", f"istiod.{v.namespace}.svc:{p.xds_tls}"]
    ports = [("grpc-xds", p.xds_plaintext), ("https-dns", p.xds_tls), ("grpc-ca", p.ca),
             ("http-monitoring", p.monitoring), ("https-webhooks", p.webhook)]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("istiod", v.namespace, labels),
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"istio": "pilot"}},
            "template": {
                "metadata": {"labels": {**labels, INJECT: "false"},
                             "annotations": {"prometheus.io/port": str(p.monitoring), "prometheus.io/scrape": "true"}},
                "spec": {
                    "serviceAccountName": "istiod",
                    "containers": [{
                        "name": "discovery", "image": v.image, "command": command,
                        "ports": [{"containerPort": n, "name": name, "protocol": "TCP"} for name, n in ports],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": p.monitoring},
                                           "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                # by name, as Helm ranges over the chart's `pilot.env` map
                                *({"name": k, "value": val} for k, val in sorted(dict(v.pilot_env).items()))],
                        "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "runAsUser": 1337, "runAsGroup": 1337,
                                            "capabilities": {"drop": ["ALL"]}},
                        # the root filesystem is read-only: the CA state and the TLS scratch files go here
                        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/sailmesh"},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "state", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta("istiod", v.namespace, {"app": "istiod", "istio": "pilot", "istio.io/rev": v.revision}),
        "spec": {"selector": {"app": "istiod", "istio": "pilot"}, "ports": [
            {"name": "grpc-xds", "port": p.xds_plaintext, "protocol": "TCP"},
            {"name": "https-dns", "port": p.xds_tls, "protocol": "TCP"},
            {"name": "grpc-ca", "port": p.ca, "protocol": "TCP"},
            {"name": "https-webhook", "port": 443, "targetPort": p.webhook, "protocol": "TCP"},
            {"name": "http-monitoring", "port": p.monitoring, "protocol": "TCP"}]},
    }
    return [deployment, service]


def _client_config(v: Values, path: str) -> Obj:
    if v.webhook_url:
        return {"url": v.webhook_url.rstrip("/") + path}
    return {"service": {"name": "istiod", "namespace": v.namespace, "path": path, "port": 443}}


def _expr(key: str, op: str, values: list[str] | None = None) -> Obj:
    e: Obj = {"key": key, "operator": op}
    if values is not None:
        e["values"] = values
    return e


def injector_webhooks(v: Values) -> list[Obj]:
    """Istio's four injection webhooks for the default revision (its chart's selectors, in its order)."""
    rev = v.revision
    hooks = [
        ("rev.namespace.sidecar-injector.istio.io",
         [_expr(REV_LABEL, "In", [rev]), _expr(NS_INJECTION_LABEL, "DoesNotExist")],
         [_expr(INJECT, "NotIn", ["false"])]),
        ("rev.object.sidecar-injector.istio.io",
         [_expr(REV_LABEL, "DoesNotExist"), _expr(NS_INJECTION_LABEL, "DoesNotExist")],
         [_expr(INJECT, "NotIn", ["false"]), _expr(REV_LABEL, "In", [rev])]),
        ("namespace.sidecar-injector.istio.io",
         [_expr(NS_INJECTION_LABEL, "In", ["enabled"])],
         [_expr(INJECT, "NotIn", ["false"])]),
        ("object.sidecar-injector.istio.io",
         [_expr(NS_INJECTION_LABEL, "DoesNotExist"), _expr(REV_LABEL, "DoesNotExist")],
         [_expr(INJECT, "In", ["true"]), _expr(REV_LABEL, "DoesNotExist")]),
    ]
    return [{"name": name, "clientConfig": _client_config(v, "/inject"),
             "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
             "namespaceSelector": {"matchExpressions": ns}, "objectSelector": {"matchExpressions": obj},
             "failurePolicy": "Fail", "sideEffects": "None", "reinvocationPolicy": "Never",
             "admissionReviewVersions": ["v1"], "timeoutSeconds": 10}
            for name, ns, obj in hooks]


def webhook_configurations(v: Values) -> list[Obj]:
    labels = {"app": "sidecar-injector", "istio.io/rev": v.revision}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": _meta(f"istio-validator-{v.namespace}", "", {"app": "istiod", "istio": "istiod",
                                                                  "istio.io/rev": v.revision}),
         "webhooks": [{"name": "validation.istio.io", "clientConfig": _client_config(v, "/validate"),
                       "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": list(ISTIO_GROUPS),
                                  "apiVersions": ["*"], "resources": ["*"]}],
                       "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                       "timeoutSeconds": 10}]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": _meta("istio-sidecar-injector", "", labels), "webhooks": injector_webhooks(v)},
    ]


def gateway(v: Values, name: str, istio_label: str, ports: list[tuple[str, int, int]], service_type: str
            ) -> list[Obj]:
    """A gateway (router-mode agent) Deployment, its Service and ServiceAccount, as Istio's gateway charts."""
    labels = {"app": name, "istio": istio_label}
    sa = f"{name}-service-account"
    cfg = InjectionConfig(image=v.image, discovery_address=f"istiod.{v.namespace}.svc:{ControlPlanePorts().xds_tls}")
    pod: Obj = {"spec": {"containers": []}}
    proxy = proxy_container(pod, labels, {}, name, cfg)
    proxy["command"][proxy["command"].index("sidecar")] = "router"
    proxy.pop("restartPolicy")
    proxy.pop("startupProbe")
    proxy["ports"] = [{"containerPort": target, "name": pname, "protocol": "TCP"} for pname, _, target in ports]
    proxy["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsNonRoot": True, "runAsUser": 1337, "runAsGroup": 1337}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, v.namespace, labels),
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": {**labels, INJECT: "false", "service.istio.io/canonical-name": name,
                                    "service.istio.io/canonical-revision": "latest"}},
            "spec": {"serviceAccountName": sa, "containers": [proxy],
                     "volumes": volumes(cfg)}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, v.namespace, labels),
               "spec": {"type": service_type, "selector": labels,
                        "ports": [{"name": pname, "port": port, "targetPort": target, "protocol": "TCP"}
                                  for pname, port, target in ports]}}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, v.namespace, labels)},
            deployment, service]


def generate(v: Values) -> list[Obj]:
    """Every object of the install, in apply order (CRDs and the namespace first, webhooks last)."""
    health = ProxyPorts().health
    out: list[Obj] = [*istio_crds(),
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(v.namespace)},
                      *rbac(v), mesh_config(v), *istiod(v)]
    if v.ingress_gateway:
        out += gateway(v, "istio-ingressgateway", "ingressgateway",
                       [("status-port", health, health), ("http2", 80, 8080), ("https", 443, 8443)],
                       "LoadBalancer")
    if v.egress_gateway:
        out += gateway(v, "istio-egressgateway", "egressgateway", [("http2", 80, 8080), ("https", 443, 8443)],
                       "ClusterIP")
    out += webhook_configurations(v)
    return out
