"""Istio's gateway deployment controller on Kubernetes, run by the Lease holder: each Gateway of the istio class
gets a gateway of its own, and the default GatewayClass `istio` exists.

As istiod (pilot/pkg/config/kube/gateway/deploymentcontroller.go, gatewayclass.go):
- the GatewayClass `istio` (controllerName istio.io/gateway-controller) is created when the Gateway API CRDs are
  installed and it is missing;
- a Gateway whose class is Istio's gets a ServiceAccount, a Deployment and a Service named `<gateway>-istio` in
  its namespace, owned by the Gateway (ownerReferences: Kubernetes' garbage collector removes them with it), its
  pods labelled `gateway.networking.k8s.io/gateway-name: <gateway>` (what the generated Istio Gateway selects);
  the Service's type is LoadBalancer unless the Gateway's annotation `networking.istio.io/service-type` says
  otherwise, one port per listener port plus status-port 15021; the Gateway's `spec.infrastructure` labels and
  annotations (else its own, convert.infrastructure) go on every object and on the pods, Istio's own labels win;
  one IPAddress in `spec.addresses` is the LoadBalancer Service's `loadBalancerIP`; a Gateway with a Hostname or
  several addresses is not deployed (Istio's IsManaged: it runs on existing Services, gatewayapi/addresses.py);
  the `deployment`, `service` and `serviceAccount` overlays of `spec.infrastructure.parametersRef` (a ConfigMap)
  are merged into those objects (gatewayapi/parameters.py); its `horizontalPodAutoscaler` / `podDisruptionBudget`
  keys add an autoscaling/v2 HorizontalPodAutoscaler (scaleTargetRef the Deployment, maxReplicas 1) / a policy/v1
  PodDisruptionBudget (selecting the gateway's pods) named `<gateway>-istio`, the overlay merged in, as Istio's
  kube-gateway template; with an autoscaler the Deployment leaves `replicas` to it (Istio's template sets none),
  and a key removed from the ConfigMap deletes its object.
Objects are written with server-side apply (field manager istio.io/gateway-controller), again only when what
they should be changes. Difference from Istio: the gateway process is a router-mode `sailmesh agent` (the same
container the install's ingress gateway runs), and listener ports below 1024 are served 8000 higher (targetPort),
as every sailmesh gateway binds them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx2 as httpx

from sailmesh.api.kinds import GATEWAY_API, KUBERNETES_GATEWAY
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.generate.gatewayapi import parameters
from sailmesh.generate.gatewayapi.addresses import is_managed, requested_address
from sailmesh.generate.gatewayapi.convert import (
    BUILTIN_CLASSES,
    GATEWAY_NAME_LABEL,
    deployment_name,
    infrastructure,
)
from sailmesh.generate.gatewayapi.status import CONTROLLER_NAME
from sailmesh.generate.names import gateway_bind_port
from sailmesh.install.manifests import Values, gateway
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.store import KubeStore
from sailmesh.settings import ProxyPorts
from sailmesh.webhook.inject import InjectionConfig

log = logging.getLogger(__name__)

FIELD_MANAGER = "istio.io/gateway-controller"
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
DEFAULT_CLASS = "istio"
ISTIO_GATEWAY_NAME = "istio.io/gateway-name"
Obj = dict[str, Any]


def default_gateway_class() -> Obj:
    """The GatewayClass istiod creates (gatewayclass.go's builtin class)."""
    return {"apiVersion": f"{GATEWAY_API}/v1", "kind": "GatewayClass", "metadata": {"name": DEFAULT_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME, "description": "The default Istio GatewayClass"}}


def gateway_objects(gw: Resource, control_namespace: str, injection: InjectionConfig,
                    overlays: Mapping[str, Mapping[str, Any]] | None = None) -> list[Obj]:
    """The ServiceAccount, Deployment and Service of a Gateway's own gateway, with the `deployment`, `service` and
    `serviceAccount` overlays of its infrastructure.parametersRef ConfigMap merged in (parameters.merge)."""
    name = deployment_name(gw.name)
    listener_ports = sorted({int(lst.get("port", 0)) for lst in gw.spec.get("listeners") or ()
                             if isinstance(lst.get("port"), int)})
    protocols = {int(lst.get("port", 0)): str(lst.get("protocol", "TCP")).lower()
                 for lst in gw.spec.get("listeners") or () if isinstance(lst.get("port"), int)}
    health = ProxyPorts().health
    ports = [("status-port", health, health), *((f"{protocols[p]}-{p}", p, gateway_bind_port(p))
                                                for p in listener_ports)]
    service_type = str((gw.raw.get("metadata") or {}).get("annotations", {}).get(SERVICE_TYPE_ANNOTATION)
                       or "LoadBalancer")
    values = Values(namespace=control_namespace, image=injection.image)
    objs = gateway(values, name, DEFAULT_CLASS, ports, service_type) + _optional_objects(gw, overlays or {})
    infra = infrastructure({**gw.raw, "spec": gw.spec}, "labels")
    # Istio's template leaves these out of the copied annotations
    annotations = {k: v for k, v in infrastructure({**gw.raw, "spec": gw.spec}, "annotations").items()
                   if k not in ("kubectl.kubernetes.io/last-applied-configuration", "gateway.istio.io/name-override",
                                "gateway.istio.io/service-account", "gateway.istio.io/controller-version")}
    labels = {**infra, GATEWAY_NAME_LABEL: gw.name, ISTIO_GATEWAY_NAME: gw.name}
    uid = str((gw.raw.get("metadata") or {}).get("uid") or "")
    owner = {"apiVersion": gw.api_version, "kind": "Gateway", "name": gw.name, "uid": uid, "controller": True}
    for obj in objs:
        meta = obj["metadata"]
        meta["namespace"] = gw.namespace
        meta["labels"] = {**labels, "app": name}
        if annotations:
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        if uid:
            meta["ownerReferences"] = [owner]
        if obj["kind"] == "Deployment":
            obj["spec"]["selector"] = {"matchLabels": {GATEWAY_NAME_LABEL: gw.name}}
            if "horizontalPodAutoscaler" in (overlays or {}):  # the autoscaler owns the replica count
                obj["spec"].pop("replicas", None)
            template = obj["spec"]["template"]["metadata"]
            template["labels"] = {k: v for k, v in template["labels"].items() if k != "istio"} | labels | {
                "app": name, "service.istio.io/canonical-name": name}
            if annotations:
                template["annotations"] = {**(template.get("annotations") or {}), **annotations}
            for container in obj["spec"]["template"]["spec"]["containers"]:  # the proxy's own labels: the pod's
                command = container.get("command") or []
                if "--labels" in command:
                    command[command.index("--labels") + 1] = ",".join(
                        f"{k}={v}" for k, v in sorted(template["labels"].items()))
        elif obj["kind"] == "Service":
            obj["spec"]["selector"] = {GATEWAY_NAME_LABEL: gw.name}
            if requested_address(gw.spec) and service_type == "LoadBalancer":  # Istio's kube-gateway.yaml
                obj["spec"]["loadBalancerIP"] = requested_address(gw.spec)
    out = []
    for obj in objs:
        overlay = (overlays or {}).get(parameters.OVERLAY_KEYS.get(obj["kind"], ""))
        if overlay:  # merged as a strategic merge patch; kind, name and namespace stay the gateway's
            meta = {**(overlay.get("metadata") or {}), "name": obj["metadata"]["name"], "namespace": gw.namespace}
            obj = parameters.merge(obj, {**overlay, "kind": obj["kind"], "metadata": meta})
        out.append(obj)
    return out


def _optional_objects(gw: Resource, overlays: Mapping[str, Mapping[str, Any]]) -> list[Obj]:
    """The HorizontalPodAutoscaler and PodDisruptionBudget of Istio's kube-gateway template, each only when the
    parametersRef ConfigMap has its key (metadata is filled in by gateway_objects, as for the others)."""
    name = deployment_name(gw.name)
    specs = {"HorizontalPodAutoscaler": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                            "name": name}, "maxReplicas": 1},
             "PodDisruptionBudget": {"selector": {"matchLabels": {GATEWAY_NAME_LABEL: gw.name}}}}
    return [{"apiVersion": version, "kind": kind, "metadata": {"name": name}, "spec": specs[kind]}
            for kind, version in parameters.OPTIONAL_KINDS.items() if parameters.OVERLAY_KEYS[kind] in overlays]


def _path(obj: Obj) -> str:
    kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
    if kind == "Deployment":
        return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    if kind in parameters.OPTIONAL_KINDS:
        return f"/apis/{parameters.OPTIONAL_KINDS[kind]}/namespaces/{ns}/{kind.lower()}s/{name}"
    return f"/api/v1/namespaces/{ns}/{kind.lower()}s/{name}"


class GatewayDeployer:
    """Keeps a gateway per Istio-class Gateway and the default GatewayClass (`lead()` while leading)."""

    def __init__(self, conn: KubeConnection, store: KubeStore, control_namespace: str, injection: InjectionConfig,
                 has_gateway_api: Callable[[], bool], deploy: bool = True, default_class: bool = True) -> None:
        self.conn = conn
        self.deploy = deploy  # Istio's PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER
        self.default_class = default_class  # Istio's PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER
        self.store = store
        self.control_namespace = control_namespace
        self.injection = injection
        self.has_gateway_api = has_gateway_api  # the GatewayClass CRD is installed
        self._applied: dict[ResourceKey, str] = {}
        self.applies = 0

    async def lead(self) -> None:
        changes = self.store.watch()
        self._applied.clear()  # a new term: check everything once
        while True:
            try:
                await self.reconcile()
            except Exception:  # a bug here must not end the leader's other work, nor this loop
                log.exception("Gateway API gateway deployer: reconcile failed; retrying on the next change")
            await anext(changes)
            await asyncio.sleep(0.05)

    def controller_of(self, class_name: str) -> str:
        """The controller of a GatewayClass (the built-in classes count before they are created)."""
        found = self.store.get("GatewayClass", "", class_name)
        return str(found.spec.get("controllerName", "")) if found else BUILTIN_CLASSES.get(class_name, "")

    async def reconcile(self) -> None:
        if not self.has_gateway_api():
            return
        if self.default_class and self.store.get("GatewayClass", "", DEFAULT_CLASS) is None:
            try:
                await self.conn.send_json("POST", f"/apis/{GATEWAY_API}/v1/gatewayclasses", default_gateway_class())
                log.info("created the default GatewayClass %s", DEFAULT_CLASS)
            except (KubeApiError, httpx.HTTPError) as e:
                if not (isinstance(e, KubeApiError) and e.code == 409):
                    log.warning("GatewayClass %s not created: %s", DEFAULT_CLASS, e)
        for gw in self.store.list(KUBERNETES_GATEWAY) if self.deploy else ():
            if self.controller_of(str(gw.spec.get("gatewayClassName", ""))) != CONTROLLER_NAME \
                    or not is_managed(gw.spec):  # Istio's manual deployment: the Gateway runs on existing Services
                continue
            overlays, bad = parameters.overlays(gw, lambda ns, name: self.store.get("ConfigMap", ns, name))
            if bad:  # the Gateway's status says why (InvalidParameters); its gateway is left as it was
                continue
            objs = gateway_objects(gw, self.control_namespace, self.injection, overlays)
            digest = json.dumps(objs, sort_keys=True)
            if self._applied.get(gw.key) == digest:
                continue
            if await self._apply(gw, objs):
                self._applied[gw.key] = digest

    async def _apply(self, gw: Resource, objs: list[Obj]) -> bool:
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        kinds = {obj["kind"] for obj in objs}
        try:
            for obj in objs:
                await self.conn.send_json("PATCH", _path(obj), obj, "application/apply-patch+yaml", params)
            for kind in parameters.OPTIONAL_KINDS.keys() - kinds:  # its key left the ConfigMap (or never was)
                gone = {"kind": kind, "metadata": {"namespace": gw.namespace, "name": deployment_name(gw.name)}}
                try:
                    await self.conn.delete(_path(gone))  # a missing one is no error
                except KubeApiError as e:  # e.g. a ClusterRole from before these kinds: the gateway itself is fine
                    log.warning("%s %s/%s of Gateway %s not deleted: %s", kind, gw.namespace,
                                deployment_name(gw.name), gw.name, e)
        except (KubeApiError, httpx.HTTPError) as e:
            log.warning("gateway %s/%s for Gateway %s not applied: %s", gw.namespace, deployment_name(gw.name),
                        gw.name, e)
            return False
        self.applies += 1
        log.info("applied gateway %s/%s (%s) for Gateway %s", gw.namespace, deployment_name(gw.name),
                 ", ".join(obj["kind"] for obj in objs), gw.name)
        return True
