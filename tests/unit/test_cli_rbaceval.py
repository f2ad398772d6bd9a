"""rbaceval: Envoy RBAC decisions and readable rules from the RBAC protos sailmesh generates for Istio policies."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2

from sailmesh.explain.rbaceval import Connection, decide, policy_label, rule_rows
from sailmesh.explain.routematch import Request
from sailmesh.generate import authz_model as m

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def reviews_viewer() -> rbac_pb2.RBAC:
    """Istio's authz-http task: reviews-viewer (GET from productpage) plus allow-nothing, as sailmesh builds them."""
    viewer = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=[rbac_pb2.Permission(
            or_rules=rbac_pb2.Permission.Set(rules=[rbac_pb2.Permission(header=m.header_matcher(":method", "GET"))]))
        ]))],
        principals=[rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[rbac_pb2.Principal(
            or_ids=rbac_pb2.Principal.Set(ids=[m.authenticated(m.exact(PRODUCTPAGE))]))]))])
    nothing = m.match_never()
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={
        "ns[default]-policy[reviews-viewer]-rule[0]": viewer, "ns[default]-policy[allow-nothing]-rule[0]": nothing})


def test_allow_needs_a_matching_policy_and_names_it() -> None:
    get = Request.from_url("GET", "http://reviews:9080/reviews/0")
    d = decide(reviews_viewer(), get, Connection(principal=PRODUCTPAGE))
    assert d.allowed and d.policy == "ns[default]-policy[reviews-viewer]-rule[0]"
    assert "reviews-viewer.default, rule 0" in d.reason
    # wrong method, wrong peer, and plaintext (no peer certificate: `authenticated` never matches)
    for req, conn in ((Request.from_url("POST", "http://reviews:9080/"), Connection(principal=PRODUCTPAGE)),
                      (get, Connection(principal="spiffe://cluster.local/ns/default/sa/other")),
                      (get, Connection())):
        d = decide(reviews_viewer(), req, conn)
        assert not d.allowed and d.policy == "" and "allow-nothing.default" in d.reason


def test_deny_and_audit() -> None:
    deny = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies={"ns[foo]-policy[deny-get]-rule[0]": rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(header=m.header_matcher(":method", "GET"))],
        principals=[rbac_pb2.Principal(any=True)])})
    assert not decide(deny, Request.from_url("GET", "http://h/"), Connection()).allowed
    assert decide(deny, Request.from_url("POST", "http://h/"), Connection()).allowed
    audit = rbac_pb2.RBAC(action=rbac_pb2.RBAC.LOG, policies=deny.policies)
    d = decide(audit, Request.from_url("GET", "http://h/"), Connection())
    assert d.allowed and d.action == "AUDIT" and d.policy


def test_connection_facts_and_unknowns() -> None:
    pol = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(destination_port=9080)],
                          principals=[rbac_pb2.Principal(direct_remote_ip=m.cidr("127.0.0.0/8"))])
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": pol})
    req = Request.from_url("GET", "http://h/")
    assert decide(rules, req, Connection(source_ip="127.1.2.3", destination_port=9080)).allowed
    assert not decide(rules, req, Connection(source_ip="10.0.0.1", destination_port=9080)).allowed
    assert not decide(rules, req, Connection(source_ip="127.1.2.3", destination_port=9090)).allowed
    jwt = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)], principals=[m.jwt_claim("iss", m.exact("x"))])})
    conn = Connection()  # no token: jwt_authn wrote no payload, so a claim rule does not match (Istio: 403)
    d = decide(jwt, req, conn)
    assert not d.allowed and not conn.unknown and d.checks == ("p: token claim iss 'x' (absent): does not match",)
    conn = Connection(metadata={"envoy.filters.http.jwt_authn": {"payload": {"iss": "x"}}})
    assert decide(jwt, req, conn).allowed
    other = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={"p": rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[rbac_pb2.Principal(metadata=m.metadata_path("envoy.filters.http.foo", ["k"], m.ValueMatcher(
            string_match=m.exact("v"))))])})
    conn = Connection()
    assert not decide(other, req, conn).allowed and conn.unknown == ["principal metadata"]  # said, not guessed


def test_rules_in_words() -> None:
    rows = list(rule_rows(reviews_viewer()))
    assert [(r.action, r.policy, r.rule) for r in rows] == [("ALLOW", "allow-nothing.default", "0"),
                                                            ("ALLOW", "reviews-viewer.default", "0")]
    assert (rows[0].principals, rows[0].permissions) == ("no one", "nothing")
    assert rows[1].principals == f"peer {PRODUCTPAGE}" and rows[1].permissions == "method GET"
    assert policy_label("custom-name") == "custom-name"
