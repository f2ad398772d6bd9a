"""AuthorizationPolicy selection and translation details not covered by Istio's goldens (test_authz_conformance.py)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate import authz, enforcement
from sailmesh.generate.affect import affected_types
from sailmesh.generate.authz_model import Principal
from sailmesh.generate.filters import Direction, FilterContext, http_filters
from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_support import generated, make_snapshot, resources, service, sidecar

HTTPBIN = sidecar("httpbin-v1-0", ns="foo", app_ports={8000: 41000, 7070: 41001}, app="httpbin", version="v1")


def policy(name: str, ns: str, spec: str, annotations: str = "") -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}"
            f"{', annotations: ' + annotations if annotations else ''}}}\nspec: {spec}\n---\n")


def snap(*docs: str):  # type: ignore[no-untyped-def]
    return make_snapshot(resources("".join(docs)) if docs else [],
                         [service("httpbin", "foo", [(8000, "HTTP"), (7070, "TCP")])])


def names(selected: authz.Selected) -> dict[str, list[str]]:
    return {k: [f"{r.namespace}/{r.name}" for r in getattr(selected, k)] for k in ("custom", "deny", "allow", "audit")
            if getattr(selected, k)}


def test_selection_root_namespace_namespace_selector_and_target_refs() -> None:
    s = snap(
        policy("mesh-wide", "istio-system", "{}"),
        policy("ns-wide", "foo", "{action: DENY, rules: [{}]}"),
        policy("selected", "foo", "{selector: {matchLabels: {app: httpbin}}, action: AUDIT, rules: [{}]}"),
        policy("other-app", "foo", "{selector: {matchLabels: {app: sleep}}}"),
        policy("other-ns", "bar", "{}"),
        policy("root-selector", "istio-system", "{selector: {matchLabels: {version: v1}}, action: DENY, rules: [{}]}"),
        policy("target-ref", "foo", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}"),
    )
    # root namespace first (mesh-wide), then the proxy's namespace; a targetRef policy never applies to a sidecar
    assert names(authz.select(s, HTTPBIN)) == {
        "deny": ["istio-system/root-selector", "foo/ns-wide"], "allow": ["istio-system/mesh-wide"],
        "audit": ["foo/selected"]}
    # a Gateway API gateway: its Gateway targetRef applies (same namespace and name), and selector policies too
    gw = sidecar("gw-0", ns="foo", **{"gateway.networking.k8s.io/gateway-name": "gw"})
    assert "foo/target-ref" in names(authz.select(s, gw))["allow"]


def rbac_configs(s, port: int = 8000) -> list[http_rbac.RBAC]:  # type: ignore[no-untyped-def]
    out = []
    for f in http_filters(FilterContext(s, HTTPBIN, Direction.INBOUND, port)):
        if f.name == "envoy.filters.http.rbac":
            cfg = http_rbac.RBAC()
            assert f.typed_config.Unpack(cfg)
            out.append(cfg)
    return out


def test_http_chain_order_and_no_filters_without_policies() -> None:
    assert rbac_configs(snap()) == []
    s = snap(policy("a", "foo", "{rules: [{}]}"), policy("d", "foo", "{action: DENY, rules: [{}]}"),
             policy("au", "foo", "{action: AUDIT, rules: [{}]}"))
    # AUDIT (LOG), DENY, ALLOW: Istio's order
    assert [c.rules.action for c in rbac_configs(s)] == [rbac_pb2.RBAC.LOG, rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.ALLOW]
    # outbound chains carry no authorization
    assert [f.name for f in http_filters(FilterContext(s, HTTPBIN, Direction.OUTBOUND, 15001))
            if "rbac" in f.name] == []


def test_dry_run_goes_to_shadow_rules() -> None:
    s = snap(policy("dry", "foo", "{action: DENY, rules: [{}]}", '{"istio.io/dry-run": "true"}'))
    [cfg] = rbac_configs(s)
    assert not cfg.HasField("rules") and list(cfg.shadow_rules.policies) == ["ns[foo]-policy[dry]-rule[0]"]
    assert cfg.shadow_rules_stat_prefix == "istio_dry_run_deny_"


def tcp_rbac(s) -> list[net_rbac.RBAC]:  # type: ignore[no-untyped-def]
    lis = generated(s, HTTPBIN, LISTENER, listener_pb2.Listener)
    tcp = next(li for li in lis.values() if li.address.socket_address.port_value == 7070)
    filters = list(tcp.filter_chains[0].filters)
    assert filters[-1].name == "envoy.filters.network.tcp_proxy"
    out = []
    for f in filters[:-1]:
        assert f.name == "envoy.filters.network.rbac"
        cfg = net_rbac.RBAC()
        assert f.typed_config.Unpack(cfg)
        assert cfg.stat_prefix == "tcp."
        out.append(cfg)
    return out


def test_tcp_ports_get_network_rbac_with_istios_http_field_rule() -> None:
    assert tcp_rbac(snap()) == []
    # DENY: the HTTP-only field is dropped, so the rule widens (here: denies every connection)
    [deny] = tcp_rbac(snap(policy("d", "foo", "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}")))
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    assert deny.rules.policies["ns[foo]-policy[d]-rule[0]"].permissions[0].and_rules.rules[0].any
    # ALLOW: the rule is dropped, so an ALLOW with only HTTP rules allows no connection
    [allow] = tcp_rbac(snap(policy("a", "foo", "{rules: [{to: [{operation: {paths: [/x]}}]}, "
                                              "{to: [{operation: {ports: ['7070']}}]}]}")))
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW and list(allow.rules.policies) == ["ns[foo]-policy[a]-rule[1]"]


def test_principals_and_namespaces_match_the_peer_spiffe_id() -> None:
    s = snap(policy("p", "foo", "{rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep], "
                                "namespaces: [bar]}}]}]}"))
    [cfg] = rbac_configs(s)
    ids = cfg.rules.policies["ns[foo]-policy[p]-rule[0]"].principals[0].and_ids.ids
    assert ids[0].or_ids.ids[0] == Principal(authenticated=Principal.Authenticated(
        principal_name={"exact": "spiffe://cluster.local/ns/foo/sa/sleep"}))
    assert ids[1].or_ids.ids[0].authenticated.principal_name.safe_regex.regex == ".*/ns/bar/.*"


def test_the_jwt_hook_replaces_the_request_auth_matchers() -> None:
    s = snap(policy("j", "foo", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"))
    marker = Principal(header={"name": "x-hooked", "present_match": True})
    seen: list[tuple[str, tuple[str, ...]]] = []

    def hook(key: str, values: object) -> Principal:
        seen.append((key, tuple(values)))  # type: ignore[arg-type]
        return marker

    [built] = authz.local_rbacs(authz.select(s, HTTPBIN), False, authz.Context(request_auth=hook))
    assert built.rules is not None
    assert built.rules.policies["ns[foo]-policy[j]-rule[0]"].principals[0].and_ids.ids == [marker]
    assert seen == [("request.auth.principal", ("*",))]


def test_what_is_not_enforced_is_reported_and_nothing_else() -> None:
    s = snap(policy("j", "foo", "{rules: [{when: [{key: 'request.auth.claims[groups]', values: [a]}]}]}"),
             policy("w", "foo", "{targetRefs: [{kind: Service, name: httpbin}]}"),
             policy("g", "foo", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}"),
             policy("fine", "foo", "{rules: [{to: [{operation: {paths: [/x]}}]}]}"))
    notes = {r.name: enforcement.not_enforced(r) for r in s.of_kind("AuthorizationPolicy")}
    assert notes["j"] == notes["g"] == notes["fine"] == []  # JWT keys read jwt_authn's payload: enforced
    assert notes["w"] == ["AuthorizationPolicy foo/w: accepted, not enforced: targetRef(s) of kind Service "
                          "(waypoints are not supported; a targetRef policy never applies to a sidecar)"]


def test_a_policy_change_pushes_listeners_only() -> None:
    before, after = snap(), snap(policy("a", "foo", "{}"))
    change = Change(keys=frozenset({ResourceKey("AuthorizationPolicy", "foo", "a")}))
    assert affected_types(change, before, after) == frozenset({LISTENER})


def test_denied_http_answer_is_envoys_rbac_default() -> None:
    # the RBAC filter has no custom deny response: Envoy answers 403 `RBAC: access denied` (checked end to end in
    # tests/e2e/test_authz_envoy.py); the filter is the typed RBAC config
    chain = http_filters(FilterContext(snap(policy("a", "foo", "{}")), HTTPBIN, Direction.INBOUND, 8000))
    f = next(f for f in chain if not f.name.startswith("istio.metadata_exchange."))  # after metadata exchange
    assert isinstance(f, hcm_pb2.HttpFilter) and f.typed_config.type_url.endswith("filters.http.rbac.v3.RBAC")
