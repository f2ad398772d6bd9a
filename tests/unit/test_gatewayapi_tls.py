"""Gateway API listener TLS and route attachment as Istio's conversion.go translates them (generate/gatewayapi/
listener_tls.py): several certificateRefs (Istio 1.27+: up to 2, served side by side), frontendValidation's
caCertificateRefs (Istio's buildCaCertificateReference: MUTUAL with a `configmap://` or `kubernetes-gateway://`
caCertCredentialName), `tls.options` (gateway.istio.io/tls-terminate-mode, tls-cipher-suites), allowedRoutes
selector matchExpressions (metav1.LabelSelectorAsSelector), backendRef filters (header modifiers only, else the
route is refused) and sessionPersistence (ignored by Istio, reported so)."""

from __future__ import annotations

import base64
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from sailmesh.api.models.networking import ServerTLSSettings
from sailmesh.api.resource import ResourceKey
from sailmesh.generate import enforcement, gateway_tls
from sailmesh.generate.gateway import gateway_secrets
from sailmesh.generate.gatewayapi.convert import Converted, label_selector_matches
from sailmesh.snapshot.model import ProxyView
from tests.unit.test_gatewayapi_convert import GATEWAY, parent_conditions, resources, route, run
from tests.unit.test_generate_support import make_snapshot

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBclientca\n-----END CERTIFICATE-----\n"
PROXY = ProxyView(id="router~127.0.0.2~gw-istio-0.infra~infra.svc.cluster.local", type="router", ip="127.0.0.2",
                  namespace="infra", workload_name="gw-istio-0",
                  labels={"gateway.networking.k8s.io/gateway-name": "gw"})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, ns: str = "infra", ca: bool = False) -> str:
    extra = f", ca.crt: {b64(CA_PEM)}" if ca else ""
    return f"""
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: {name}, namespace: {ns}}}
data: {{tls.crt: {b64('CERT-' + name)}, tls.key: {b64('KEY-' + name)}{extra}}}
"""


CA_MAP = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca, namespace: infra}}
data: {{ca.crt: {CA_PEM!r}}}
""".replace("'", '"')


def gateway(tls: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: istio
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {tls}
"""


def server_tls(out: Converted) -> dict[str, Any] | None:
    servers = [g.spec["servers"][0] for g in out.gateways]
    return servers[0].get("tls") if servers else None


def listener(out: Converted) -> dict[str, tuple[str, str]]:
    status = out.status[ResourceKey("KubernetesGateway", "infra", "gw")]["listeners"][0]
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def served(out: Converted, *texts: str) -> dict[str, secret_pb2.Secret]:
    config = [*out.gateways, *(r for t in texts for r in resources(t))]
    return {s.name: s for s in gateway_secrets(make_snapshot(config), PROXY)}


def test_two_certificate_refs_are_served_side_by_side() -> None:
    """Istio 1.27's buildTLS: 2 usable refs -> credentialNames (Envoy picks the certificate the client's
    signature algorithms allow, an RSA and an ECDSA one on one chain)."""
    texts = (gateway("{certificateRefs: [{name: rsa}, {name: ecdsa}]}"), secret("rsa"), secret("ecdsa"))
    out = run(*texts)
    assert server_tls(out) == {"mode": "SIMPLE", "credentialNames": ["rsa", "ecdsa"]}
    assert listener(out)["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert set(served(out, *texts)) == {"kubernetes://rsa", "kubernetes://ecdsa"}
    ctx = gateway_tls.downstream_tls_context(ServerTLSSettings(mode="SIMPLE", credential_names=("rsa", "ecdsa")))
    assert [s.name for s in ctx.common_tls_context.tls_certificate_sds_secret_configs] == ["kubernetes://rsa",
                                                                                         "kubernetes://ecdsa"]


def test_an_unusable_second_ref_is_dropped_and_three_refs_are_refused() -> None:
    out = run(gateway("{certificateRefs: [{name: rsa}, {name: missing}]}"), secret("rsa"))
    assert server_tls(out) == {"mode": "SIMPLE", "credentialName": "rsa"}
    assert listener(out)["ResolvedRefs"] == ("True", "ResolvedRefs")  # Istio: one usable ref is enough
    out = run(gateway("{certificateRefs: [{name: a}, {name: b}, {name: c}]}"), secret("a"), secret("b"), secret("c"))
    assert server_tls(out) is None and not out.gateways
    assert listener(out)["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert listener(out)["Programmed"] == ("False", "Invalid")
    out = run(gateway("{options: {example.com/x: y}}"))  # Terminate with no certificate at all: no server
    assert not out.gateways and listener(out)["ResolvedRefs"] == ("False", "InvalidCertificateRef")


def test_frontend_validation_with_a_config_map_is_mutual_tls() -> None:
    texts = (gateway("{certificateRefs: [{name: cert}], frontendValidation: {caCertificateRefs: "
                     "[{group: '', kind: ConfigMap, name: client-ca}]}}"), secret("cert"), CA_MAP)
    out = run(*texts)
    assert server_tls(out) == {"mode": "MUTUAL", "credentialName": "cert",
                               "caCertCredentialName": "configmap://infra/client-ca-cacert"}
    assert listener(out)["Accepted"] == ("True", "Accepted")
    ca = served(out, *texts)["configmap://infra/client-ca-cacert"]
    assert ca.validation_context.trusted_ca.inline_bytes == CA_PEM.encode()
    ctx = gateway_tls.downstream_tls_context(ServerTLSSettings(
        mode="MUTUAL", credential_name="cert", ca_cert_credential_name="configmap://infra/client-ca-cacert"))
    assert isinstance(ctx, tls_pb2.DownstreamTlsContext) and ctx.require_client_certificate.value
    validation = ctx.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    assert validation.name == "configmap://infra/client-ca-cacert"


def test_frontend_validation_with_a_secret_and_optional_mutual() -> None:
    texts = (gateway("{certificateRefs: [{name: cert}], options: {gateway.istio.io/tls-terminate-mode: "
                     "OPTIONAL_MUTUAL}, frontendValidation: {caCertificateRefs: [{group: '', kind: Secret, "
                     "name: ca-holder}]}}"), secret("cert"), secret("ca-holder", ca=True))
    out = run(*texts)
    assert server_tls(out) == {"mode": "OPTIONAL_MUTUAL", "credentialName": "cert",
                               "caCertCredentialName": "kubernetes-gateway://infra/ca-holder-cacert"}
    ca = served(out, *texts)["kubernetes-gateway://infra/ca-holder-cacert"]
    assert ca.validation_context.trusted_ca.inline_bytes == CA_PEM.encode()


def test_allow_insecure_fallback_asks_for_a_certificate_and_lets_an_untrusted_one_through() -> None:
    """Istio's buildTLS: validation mode AllowInsecureFallback -> OPTIONAL_MUTUAL with insecureSkipVerify (Envoy's
    ACCEPT_UNTRUSTED); the terminate-mode option overrides the mode and turns insecureSkipVerify off."""
    ref = "caCertificateRefs: [{group: '', kind: ConfigMap, name: client-ca}]"
    out = run(gateway(f"{{certificateRefs: [{{name: cert}}], frontendValidation: {{{ref}, "
                      "mode: AllowInsecureFallback}}"), secret("cert"), CA_MAP)
    assert server_tls(out) == {"mode": "OPTIONAL_MUTUAL", "credentialName": "cert", "insecureSkipVerify": True,
                               "caCertCredentialName": "configmap://infra/client-ca-cacert"}
    ctx = gateway_tls.downstream_tls_context(ServerTLSSettings(
        mode="OPTIONAL_MUTUAL", credential_name="cert", insecure_skip_verify=True,
        ca_cert_credential_name="configmap://infra/client-ca-cacert"))
    assert isinstance(ctx, tls_pb2.DownstreamTlsContext) and not ctx.require_client_certificate.value
    assert ctx.common_tls_context.combined_validation_context.default_validation_context \
        .trust_chain_verification == ctx.common_tls_context.combined_validation_context.default_validation_context \
        .ACCEPT_UNTRUSTED
    out = run(gateway(f"{{certificateRefs: [{{name: cert}}], options: {{gateway.istio.io/tls-terminate-mode: "
                      f"MUTUAL}}, frontendValidation: {{{ref}, mode: AllowInsecureFallback}}}}"), secret("cert"),
              CA_MAP)
    assert server_tls(out) == {"mode": "MUTUAL", "credentialName": "cert",
                               "caCertCredentialName": "configmap://infra/client-ca-cacert"}
    out = run(gateway(f"{{certificateRefs: [{{name: cert}}], frontendValidation: {{{ref}, mode: AllowValidOnly}}}}"),
              secret("cert"), CA_MAP)
    assert server_tls(out)["mode"] == "MUTUAL" and "insecureSkipVerify" not in server_tls(out)


def test_bad_frontend_validation_is_not_accepted_and_builds_no_server() -> None:
    """Istio reports Accepted=False NoValidCACertificate (and ResolvedRefs with the reason); it would still serve
    the listener without client validation, sailmesh builds no server instead (fails closed)."""
    two = "{caCertificateRefs: [{group: '', kind: ConfigMap, name: a}, {group: '', kind: ConfigMap, name: b}]}"
    cases = {
        two: "InvalidCACertificateRef",
        "{caCertificateRefs: [{group: '', kind: ConfigMap, name: nowhere}]}": "InvalidCACertificateRef",
        "{caCertificateRefs: [{group: example.com, kind: Bundle, name: x}]}": "InvalidCACertificateKind",
        "{caCertificateRefs: [{group: '', kind: ConfigMap, name: client-ca, namespace: other}]}": "RefNotPermitted",
    }
    for validation, reason in cases.items():
        out = run(gateway(f"{{certificateRefs: [{{name: cert}}], frontendValidation: {validation}}}"),
                  secret("cert"), CA_MAP)
        assert not out.gateways, validation
        conds = listener(out)
        assert conds["Accepted"] == ("False", "NoValidCACertificate"), validation
        assert conds["ResolvedRefs"] == ("False", reason), validation


def test_terminate_mode_and_cipher_suite_options() -> None:
    out = run(gateway("{certificateRefs: [{name: cert}], options: {gateway.istio.io/tls-terminate-mode: MUTUAL, "
                      "gateway.istio.io/tls-cipher-suites: 'ECDHE-RSA-AES128-GCM-SHA256, bogus, "
                      "AES256-GCM-SHA384'}}"), secret("cert"))
    assert server_tls(out) == {"mode": "MUTUAL", "credentialName": "cert",
                               "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384"]}
    out = run(gateway("{options: {gateway.istio.io/tls-terminate-mode: ISTIO_MUTUAL}}"))
    assert server_tls(out) == {"mode": "ISTIO_MUTUAL"}
    out = run(gateway("{options: {gateway.istio.io/tls-terminate-mode: ISTIO_SIMPLE}}"))
    assert server_tls(out) == {"mode": "SIMPLE", "credentialName": "builtin://"}
    ctx = gateway_tls.downstream_tls_context(ServerTLSSettings(mode="SIMPLE", credential_name="builtin://"))
    assert [s.name for s in ctx.common_tls_context.tls_certificate_sds_secret_configs] == ["default"]
    assert not ctx.require_client_certificate.value
    assert gateway_tls.credential_names(ServerTLSSettings(mode="SIMPLE", credential_name="builtin://")) == []


def test_only_options_istio_ignores_are_reported() -> None:
    (gw,) = resources(gateway("{certificateRefs: [{name: a}, {name: b}], options: {gateway.istio.io/tls-"
                              "terminate-mode: MUTUAL, example.com/other: x}, frontendValidation: "
                              "{caCertificateRefs: [{group: '', kind: ConfigMap, name: c}]}}"))
    (note,) = enforcement.not_enforced(gw)
    assert note.endswith("accepted, not enforced: spec.listeners[0].tls.options[example.com/other] (ignored, as "
                         "Istio ignores it)"), note


NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: blue, env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: red}}
"""


def test_allowed_routes_match_expressions() -> None:
    """metav1.LabelSelectorAsSelector semantics (Istio's namespacesFromSelector)."""
    labels = {"team": "blue", "env": "prod"}
    assert label_selector_matches({"matchExpressions": [{"key": "team", "operator": "In", "values": ["blue"]}]},
                                  labels)
    assert not label_selector_matches({"matchExpressions": [{"key": "team", "operator": "NotIn",
                                                             "values": ["blue"]}]}, labels)
    assert label_selector_matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]},
                                  labels)  # NotIn also matches a missing label
    assert label_selector_matches({"matchLabels": {"env": "prod"},
                                   "matchExpressions": [{"key": "team", "operator": "Exists"}]}, labels)
    assert not label_selector_matches({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, labels)
    assert not label_selector_matches({"matchExpressions": [{"key": "team", "operator": "In"}]}, labels)  # invalid
    gw = GATEWAY.replace("{from: All}", "{from: Selector, selector: {matchExpressions: [{key: team, operator: In, "
                                        "values: [blue, green]}]}}")
    other = route("  rules: [{backendRefs: [{name: a, port: 80}]}]", name="o").replace("namespace: apps",
                                                                                      "namespace: other")
    out = run(gw, NAMESPACES, route("  rules: [{backendRefs: [{name: a, port: 80}]}]"), other)
    assert parent_conditions(out, ResourceKey("HTTPRoute", "apps", "r"))["Accepted"] == ("True", "Accepted")
    assert parent_conditions(out, ResourceKey("HTTPRoute", "other", "o"))["Accepted"] == \
        ("False", "NotAllowedByListeners")
    (note,) = enforcement.not_enforced(resources(gw)[0]) or ["none"]
    assert note == "none"


def test_backend_ref_filters_other_than_header_modifiers_refuse_the_route() -> None:
    """Istio's buildHTTPDestination: RequestHeaderModifier / ResponseHeaderModifier only, else "unsupported filter
    type"; the route is not accepted (before: accepted with the filter reported as not enforced)."""
    text = route("""  rules:
  - backendRefs:
    - name: a
      port: 80
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: b, port: 80}}}]
""")
    out = run(text)
    conds = out.status[ResourceKey("HTTPRoute", "apps", "r")]["parents"][0]["conditions"]
    (accepted,) = [c for c in conds if c["type"] == "Accepted"]
    assert accepted["status"] == "False" and "unsupported filter type 'RequestMirror'" in accepted["message"]
    assert enforcement.not_enforced(resources(text)[0]) == []


def test_session_persistence_is_reported_as_ignored_like_istio() -> None:
    text = route("""  rules:
  - backendRefs: [{name: a, port: 80}]
    sessionPersistence: {sessionName: s, type: Cookie}
""")
    (note,) = enforcement.not_enforced(resources(text)[0])
    assert note.endswith("spec.rules[0].sessionPersistence (ignored, as Istio ignores it)"), note


def test_a_ca_config_map_change_reaches_the_gateway_secrets() -> None:
    """The CA ConfigMap is served over ADS: its change pushes secrets while a gateway names it (any other
    ConfigMap change pushes nothing, test_api_meshconfig)."""
    from sailmesh.api.change import Change
    from sailmesh.generate.affect import affected_types
    from sailmesh.xds.types import SECRET

    texts = (gateway("{certificateRefs: [{name: cert}], frontendValidation: {caCertificateRefs: "
                     "[{group: '', kind: ConfigMap, name: client-ca}]}}"), secret("cert"), CA_MAP)
    out = run(*texts)
    snap = make_snapshot([*out.gateways, *(r for t in texts for r in resources(t))])
    (cm,) = [r for r in snap.of_kind("ConfigMap")]
    assert SECRET in affected_types(Change.of(cm.key), snap, snap)
    plain = make_snapshot([r for t in texts for r in resources(t)])
    assert SECRET not in affected_types(Change.of(cm.key), plain, plain)


SERVICE_NGINX = """
apiVersion: v1
kind: Service
metadata: {name: my-nginx, namespace: infra}
spec: {ports: [{port: 443, name: https}]}
"""


def policy(validation: str, target: str = "my-nginx", name: str = "p") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: infra}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {target}}}]
  validation: {validation}
"""


def test_backend_tls_policy_becomes_a_destination_rule() -> None:
    """Istio 1.27's backend_policies.go: SIMPLE, sni = hostname, SANs, the ConfigMap CA as `configmap://ns/name`
    (served as `...-cacert`), one rule per Service named `<svc>-istio-autogenerated-k8s-gateway`."""
    texts = (SERVICE_NGINX, CA_MAP.replace("client-ca", "backend-ca"),
             policy("{hostname: nginx.example.com, caCertificateRefs: [{group: '', kind: ConfigMap, name: "
                    "backend-ca}], subjectAltNames: [{type: URI, uri: 'spiffe://x/y'}]}"))
    out = run(*texts)
    (dr,) = out.destination_rules
    assert (dr.namespace, dr.name) == ("infra", "my-nginx-istio-autogenerated-k8s-gateway")
    assert dr.spec == {"host": "my-nginx.infra.svc.cluster.local", "trafficPolicy": {"tls": {
        "mode": "SIMPLE", "sni": "nginx.example.com", "subjectAltNames": ["spiffe://x/y"],
        "credentialName": "configmap://infra/backend-ca"}}}
    (ancestor,) = out.status[ResourceKey("BackendTLSPolicy", "infra", "p")]["ancestors"]
    assert ancestor["conditions"][0]["status"] == "True"
    from sailmesh.generate.tls import upstream_credential_names

    tls = dr.model.traffic_policy.tls  # type: ignore[union-attr]
    assert upstream_credential_names(tls) == ["configmap://infra/backend-ca-cacert"]
    config = [*out.destination_rules, *(r for t in texts for r in resources(t))]
    ca = {s.name: s for s in gateway_secrets(make_snapshot(config), PROXY)}["configmap://infra/backend-ca-cacert"]
    assert ca.validation_context.trusted_ca.inline_bytes == CA_PEM.encode()


def test_backend_tls_policy_problems_as_istio_reports_them() -> None:
    out = run(SERVICE_NGINX, policy("{hostname: h, wellKnownCACertificates: System}", target="nowhere"))
    assert not out.destination_rules
    (ancestor,) = out.status[ResourceKey("BackendTLSPolicy", "infra", "p")]["ancestors"]
    assert ancestor["conditions"][0]["reason"] == "TargetNotFound"
    out = run(SERVICE_NGINX, policy("{hostname: h, caCertificateRefs: [{group: '', kind: ConfigMap, name: none}]}"))
    (dr,) = out.destination_rules  # Istio's invalid:// credential: nothing is served, traffic is blocked
    assert dr.spec["trafficPolicy"]["tls"]["credentialName"] == "invalid://"
    (ancestor,) = out.status[ResourceKey("BackendTLSPolicy", "infra", "p")]["ancestors"]
    assert (ancestor["conditions"][0]["status"], ancestor["conditions"][0]["reason"]) == ("False", "Invalid")
    out = run(SERVICE_NGINX, policy("{hostname: h, wellKnownCACertificates: System}"))
    assert out.destination_rules[0].spec["trafficPolicy"]["tls"] == {"mode": "SIMPLE", "sni": "h"}


def test_sidecars_apply_the_backend_tls_policy_too() -> None:
    """Istio's cluster_tls.go: a `configmap://` CA is no privileged credential, so a sidecar originates TLS with it
    even though the generated rule has no workloadSelector (a `kubernetes://` credentialName would not be used)."""
    from envoy.config.cluster.v3 import cluster_pb2

    from sailmesh.generate.generator import Generator
    from sailmesh.xds.types import CLUSTER, SECRET
    from tests.unit.test_generate_support import service, sidecar, unpacked

    texts = (CA_MAP.replace("client-ca", "backend-ca"),
             policy("{hostname: nginx.example.com, caCertificateRefs: [{group: '', kind: ConfigMap, name: "
                    "backend-ca}]}"))
    out = run(SERVICE_NGINX, *texts)
    snap = make_snapshot([*out.destination_rules, *(r for t in texts for r in resources(t))],
                         services=[service("my-nginx", ns="infra", ports=((443, "HTTPS"),))])
    app = sidecar("app-0", ip="127.0.1.9", app="app")
    gen = Generator()
    cluster = unpacked(gen.resources(snap, app, CLUSTER), cluster_pb2.Cluster)[
        "outbound|443||my-nginx.infra.svc.cluster.local"]
    upstream = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(upstream)  # type: ignore[attr-defined]
    assert upstream.sni == "nginx.example.com"
    validation = upstream.common_tls_context.combined_validation_context.validation_context_sds_secret_config
    assert validation.name == "configmap://infra/backend-ca-cacert"
    names = set(unpacked(gen.resources(snap, app, SECRET), secret_pb2.Secret))
    assert "configmap://infra/backend-ca-cacert" in names


def test_the_generated_rule_sorts_before_a_users_rule_for_the_same_host() -> None:
    """Istio 1.27: the DestinationRule generated from a BackendTLSPolicy has no creationTimestamp (Go's zero time),
    so sortConfigByCreationTime puts it first and mergeDestinationRule merges the user's rule into it: the merged
    rule is named `my-nginx-istio-autogenerated-k8s-gateway`, keeps the policy's TLS (the user's later top-level
    trafficPolicy is not taken) and gains the user's subsets."""
    from sailmesh.registry.model import Service, ServicePort

    user = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: aaa-user-rule, namespace: infra, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  host: my-nginx.infra.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets: [{name: v1, labels: {version: v1}}]
"""
    texts = (CA_MAP.replace("client-ca", "backend-ca"), user,
             policy("{hostname: nginx.example.com, caCertificateRefs: [{group: '', kind: ConfigMap, name: "
                    "backend-ca}]}"))
    out = run(SERVICE_NGINX, *texts)
    svc = Service("my-nginx.infra.svc.cluster.local", "my-nginx", "infra", (ServicePort(443, "https", "HTTPS"),))
    snap = make_snapshot([*(r for t in texts for r in resources(t)), *out.destination_rules], services=[svc])
    assert [r.name for r in snap.of_kind("DestinationRule")] == ["my-nginx-istio-autogenerated-k8s-gateway",
                                                                  "aaa-user-rule"]
    dr = snap.index.destination_rule("infra", svc, {})
    assert dr is not None and dr.name == "my-nginx-istio-autogenerated-k8s-gateway"
    assert dr.spec["trafficPolicy"]["tls"]["mode"] == "SIMPLE"
    assert [s["name"] for s in dr.spec.get("subsets") or ()] == ["v1"]


def test_backend_tls_policy_validation_follows_the_crd() -> None:
    from sailmesh.api.gatewayapi import check

    ok = {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}],
          "validation": {"hostname": "h", "wellKnownCACertificates": "System"}}
    assert check("BackendTLSPolicy", ok) == []
    both = {**ok, "validation": {**ok["validation"], "caCertificateRefs": [{"group": "", "kind": "ConfigMap",
                                                                              "name": "c"}]}}
    assert ("spec.validation", "must not contain both CACertificateRefs and WellKnownCACertificates") in \
        check("BackendTLSPolicy", both)
    neither = {**ok, "validation": {"hostname": "h"}}
    assert ("spec.validation", "must specify either CACertificateRefs or WellKnownCACertificates") in \
        check("BackendTLSPolicy", neither)
    assert ("spec.targetRefs", "required: at least 1 item") in check("BackendTLSPolicy", {"validation": {
        "hostname": "h", "wellKnownCACertificates": "System"}})


def test_the_reader_serves_the_policy_rules_and_widens_only_their_changes() -> None:
    from sailmesh.api.change import Change
    from sailmesh.generate.gatewayapi.reader import GatewayApiReader
    from sailmesh.store.memory import MemoryStore

    store = MemoryStore()
    reader = GatewayApiReader(store, "cluster.local")
    store.apply(resources(SERVICE_NGINX) + resources(gateway("{certificateRefs: [{name: cert}]}")))
    reader.list("Gateway")  # converted once
    res = store.apply(resources(policy("{hostname: h, wellKnownCACertificates: System}")))
    widened = reader.expand(Change(frozenset(res.created)))
    assert "DestinationRule" in widened.kinds
    (dr,) = reader.list("DestinationRule")
    assert dr.name == "my-nginx-istio-autogenerated-k8s-gateway"
    res = store.apply(resources(gateway("{certificateRefs: [{name: other}]}")))
    assert "DestinationRule" not in reader.expand(Change(frozenset(res.updated))).kinds  # rules unchanged
