"""What the mesh accepts but does not act on yet: per resource, the fields and kinds reported "accepted, not enforced".

The one list of translation gaps, next to the translators that would close them: a feature that lands removes its
line here (a test applies the translated feature and expects no note). `apply`, `analyze`, `get` and the control
plane's log show these notes, so no accepted field is ignored silently (docs/translation.md "Not translated yet").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sailmesh.api.meshconfig import DEFAULT_MESH_CONFIG, MeshConfig
from sailmesh.api.resource import Resource
from sailmesh.generate import authn
from sailmesh.generate.gatewayapi import unenforced as gatewayapi
from sailmesh.telemetry import resolve as telemetry_resolve

NOT_ENFORCED = "accepted, not enforced"

# Kinds validated and analyzed, but not translated at all.
WHOLE_KINDS: dict[str, str] = {
    "WasmPlugin": "Wasm plugins are not loaded",
}


def _at(spec: Any, *path: str | int) -> Any:
    """spec[path...] or None (lists by index, maps by key)."""
    node = spec
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def _list(spec: Any, *path: str) -> list[Any]:
    found = _at(spec, *path)
    return found if isinstance(found, list) else []


def _virtual_service(spec: Any) -> Iterator[str]:
    # destinationSubnets: a filter chain on the original destination address (listeners.py _subnet_chains), which
    # only a captured sidecar has; an explicit-proxy sidecar's CONNECT names a host (Istio's gateways ignore it too)
    for kind in ("tls", "tcp"):
        for i, rule in enumerate(_list(spec, kind)):
            for j, match in enumerate(_list(rule, "match")):
                if _at(match, "destinationSubnets"):
                    yield f"spec.{kind}[{i}].match[{j}].destinationSubnets (matched by captured sidecars only: an " \
                          "explicit-proxy sidecar skips the match)"
                if kind == "tcp" and _at(match, "sourceSubnet"):
                    yield f"spec.tcp[{i}].match[{j}].sourceSubnet (ignored, as Istio ignores it)"
    yield from _http_routes(spec)


def _http_routes(spec: Any) -> Iterator[str]:
    # fields of Istio's HTTPRoute that the translation does not read yet (found by the docs/translation.md audit)
    for i, rule in enumerate(_list(spec, "http")):
        # Istio's translateFault reads neither (it logs "Exponential faults are not yet supported")
        for path in (("fault", "abort", "http2Error"), ("fault", "delay", "exponentialDelay")):
            if _at(rule, *path) is not None:
                yield f"spec.http[{i}].{'.'.join(path)} (ignored, as Istio ignores it)"


# DestinationRule traffic-policy fields the cluster builder does not read yet (docs/translation.md audit)
_DR_POLICY_GAPS = (("retryBudget", "budgetInterval"),)  # Envoy 1.40's RetryBudget has no budget_interval


def _destination_rule(spec: Any) -> Iterator[str]:
    policies = [("spec.trafficPolicy", _at(spec, "trafficPolicy"))]
    policies += [(f"spec.subsets[{i}].trafficPolicy", _at(s, "trafficPolicy")) for i, s in
                 enumerate(_list(spec, "subsets"))]
    for where, policy in list(policies):
        policies += [(f"{where}.portLevelSettings[{j}]", pl) for j, pl in
                     enumerate(_list(policy, "portLevelSettings") if isinstance(policy, Mapping) else [])]
    pooled = any(_at(policy, "connectionPool") is not None for _where, policy in policies)
    for where, policy in policies:
        if _at(policy, "loadBalancer", "backendUtilization") is not None:  # pilot reads it nowhere
            yield f"{where}.loadBalancer.backendUtilization (ignored, as Istio ignores it)"
        for path in _DR_POLICY_GAPS:
            if _at(policy, *path) is not None:
                yield f"{where}.{'.'.join(path)}"
        # tunnels are tcp_proxy's tunneling_config (upstream_l4); an explicit-proxy sidecar forwards its clients'
        # CONNECT to the rule's target instead, which cannot become a POST
        if _at(policy, "tunnel", "protocol") == "POST":
            yield f"{where}.tunnel.protocol: POST (TCP listeners only: an explicit-proxy sidecar's CONNECT clients " \
                  "are not tunnelled)"
        if _at(policy, "tls", "caCrl") and (_at(policy, "tls", "credentialName") or
                                            _at(policy, "tls", "insecureSkipVerify")):
            yield f"{where}.tls.caCrl (with credentialName or insecureSkipVerify: Istio ignores it too)"
        if _at(policy, "retryBudget") is not None and not pooled:  # Istio's applyConnectionPool applies it
            yield f"{where}.retryBudget (without a connectionPool: Istio ignores it too)"


def _gateway(spec: Any) -> Iterator[str]:
    # what Istio's BuildListenerTLSContext does not read either, for the server's certificate source and mode
    for i, server in enumerate(_list(spec, "servers")):
        tls = _at(server, "tls")
        mode = str(_at(tls, "mode") or "PASSTHROUGH").upper()
        credentials = _at(tls, "credentialName") or _at(tls, "credentialNames")
        for key in ("verifyCertificateSpki", "verifyCertificateHash"):  # enforced with credential(s) only
            if _at(tls, key) and not credentials:
                yield f"spec.servers[{i}].tls.{key} (without credentialName: Istio ignores it too)"
        if _at(tls, "caCertCredentialName") and not (credentials and mode in ("MUTUAL", "OPTIONAL_MUTUAL")):
            yield f"spec.servers[{i}].tls.caCertCredentialName (read with credentialName(s) and MUTUAL or " \
                  "OPTIONAL_MUTUAL only, as Istio)"
        if mode == "ISTIO_MUTUAL":
            for key in ("minProtocolVersion", "maxProtocolVersion", "cipherSuites", "ecdhCurves"):
                if _at(tls, key):
                    yield f"spec.servers[{i}].tls.{key} (ISTIO_MUTUAL: Istio ignores it too)"
        # translated for certificate files and ISTIO_MUTUAL; with credentialName(s) Istio does not read it either
        # (the Secret's own `crl` / `ca.crl` key is served with its CA)
        if _at(tls, "caCrl") and credentials:
            yield f"spec.servers[{i}].tls.caCrl (with credentialName: Istio ignores it too)"


def _sidecar(spec: Any) -> Iterator[str]:
    # captureMode, bind, tls (SIMPLE/MUTUAL, files), connectionPool are translated (captureMode as Istio's
    # getBindToPort / egress bindToPort rule: an uncaptured sidecar binds its egress listeners whatever the mode)
    for i, ingress in enumerate(_list(spec, "ingress")):
        if _at(ingress, "tls") is not None and str(_at(ingress, "tls", "mode") or "") not in ("SIMPLE", "MUTUAL"):
            yield f"spec.ingress[{i}].tls.mode: {_at(ingress, 'tls', 'mode')} (SIMPLE and MUTUAL only, as Istio)"
        if str(_at(ingress, "defaultEndpoint") or "").startswith("unix://"):
            yield f"spec.ingress[{i}].defaultEndpoint: unix:// (no listener is built)"


def _envoy_filter(spec: Any) -> Iterator[str]:
    for key in ("targetRef", "targetRefs"):
        if _at(spec, key):
            yield f"spec.{key} (binds no proxy)"
    for i, cp in enumerate(_list(spec, "configPatches")):
        apply_to = _at(cp, "applyTo")
        if apply_to == "BOOTSTRAP":  # istiod applied these only through BOOTSTRAP_XDS_AGENT, since removed
            yield f"spec.configPatches[{i}].applyTo: BOOTSTRAP (ignored, as Istio ignores it)"
        operation = _at(cp, "patch", "operation")
        if apply_to == "EXTENSION_CONFIG" and operation != "ADD":  # Istio's InsertedExtensionConfigurations
            yield f"spec.configPatches[{i}].patch.operation: {operation} (EXTENSION_CONFIG: Istio serves ADD only)"
        if _at(cp, "match", "context") == "WAYPOINT":
            yield f"spec.configPatches[{i}].match.context: WAYPOINT (no waypoints here)"


def _proxy_config(spec: Any) -> Iterator[str]:
    # concurrency: the embedded platform and the injection webhook give it to a proxy as it starts (api/proxyconfig)
    for key in ("environmentVariables", "image"):
        if _at(spec, key) is not None:
            yield f"spec.{key}"


FIELD_CHECKS: dict[str, Callable[[Any], Iterator[str]]] = {
    "EnvoyFilter": _envoy_filter,
    "VirtualService": _virtual_service,
    "DestinationRule": _destination_rule,
    "Gateway": _gateway,
    "Sidecar": _sidecar,
    "ProxyConfig": _proxy_config,
    "KubernetesGateway": gatewayapi.gateway,  # the Gateway API's Gateway (api/kinds.py)
    "HTTPRoute": gatewayapi.http_route,
    "GRPCRoute": gatewayapi.grpc_route,
}


def not_enforced(resource: Resource, mesh: MeshConfig = DEFAULT_MESH_CONFIG) -> list[str]:
    """`Kind ns/name: accepted, not enforced: ...` lines for one resource ([] when everything in it is acted on)."""
    where = f"{resource.kind} {resource.namespace}/{resource.name}" if resource.namespace \
        else f"{resource.kind} {resource.name}"
    if resource.kind in WHOLE_KINDS:
        return [f"{where}: {NOT_ENFORCED}: {WHOLE_KINDS[resource.kind]}"]
    if resource.kind == authn.KIND:
        return authn.not_enforced([resource])
    if resource.kind == "AuthorizationPolicy":
        from sailmesh.generate import authz  # (its RBAC protos load only for a policy: `analyze -f` starts faster)

        return authz.not_enforced(resource)
    if resource.kind == "Telemetry":
        fields = [line.split(": ", 1)[-1] for line in telemetry_resolve.unenforced(resource, mesh)]
        return [f"{where}: {NOT_ENFORCED}: {', '.join(fields)}"] if fields else []
    check = FIELD_CHECKS.get(resource.kind)
    if check is None:
        return []
    fields = list(check(resource.spec))
    return [f"{where}: {NOT_ENFORCED}: {', '.join(fields)}"] if fields else []
