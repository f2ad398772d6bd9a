"""explain_steps: which listener a request enters, the TLS of a hop, the inbound chain it lands on (pure)."""

from __future__ import annotations

from typing import Any

from sailmesh.explain.explain_steps import inbound_chain, outbound_listener, tls_for

HCM = {"name": "envoy.filters.network.http_connection_manager",
       "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                                 "HttpConnectionManager", "rds": {"route_config_name": "r"}}}


def listener(name: str, ip: str, port: int, *chains: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "address": {"socket_address": {"address": ip, "port_value": port}},
            "filter_chains": list(chains) or [{"filters": [HCM]}]}


def test_a_sidecar_sends_through_its_http_proxy_listener_a_gateway_through_the_port() -> None:
    lis = {"10.0.0.3_9080": listener("10.0.0.3_9080", "10.0.0.3", 9080),
           "virtualOutbound": listener("virtualOutbound", "10.0.0.3", 15001)}
    assert outbound_listener(lis, 9080, sidecar=True)[0] == "virtualOutbound"  # type: ignore[index]
    gw = {"0.0.0.0_8080": listener("0.0.0.0_8080", "10.0.0.1", 8080)}
    assert outbound_listener(gw, 8080, sidecar=False)[0] == "0.0.0.0_8080"  # type: ignore[index]
    # Istio's Gateway port 80 binds 8080 here (ports below 1024 move up by 8000)
    assert outbound_listener(gw, 80, sidecar=False)[0] == "0.0.0.0_8080"  # type: ignore[index]
    assert outbound_listener(gw, 9999, sidecar=False) is None


MUTUAL = {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "sni": "outbound_.9080_._.reviews.default.svc.cluster.local",
    "common_tls_context": {"alpn_protocols": ["istio-peer-exchange", "istio"],
                           "tls_certificate_sds_secret_configs": [{"name": "default"}],
                           "combined_validation_context": {"default_validation_context": {
                               "match_typed_subject_alt_names": [{"matcher": {"exact": "spiffe://x/sa/r"}}]}}}}}
AUTO = {"transport_socket_matches": [{"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
                                      "transport_socket": MUTUAL},
                                     {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                                         "name": "raw", "typed_config": {"@type": "x.RawBuffer"}}}]}


def test_auto_mtls_follows_the_endpoint_label() -> None:
    # Istio's auto mTLS: endpoints labelled tlsMode=istio get the mesh certificate, others plaintext
    tls = tls_for(AUTO, {"tls_match": {"tlsMode": "istio"}})
    assert tls["mode"].startswith("ISTIO_MUTUAL") and tls["server_identity"] == ["spiffe://x/sa/r"]
    assert tls_for(AUTO, {"tls_match": {}})["mode"] == "plaintext"
    assert tls_for({"transport_socket": MUTUAL}, {"tls_match": {}})["mode"].startswith("ISTIO_MUTUAL")
    assert tls_for({}, {"tls_match": {}})["via"] == "no transport socket"


def test_the_inbound_chain_for_mtls_and_plaintext() -> None:
    tls_chain = {"filter_chain_match": {"transport_protocol": "tls", "application_protocols": ["istio", "istio-h2"]},
                 "filters": [HCM]}
    plain_chain = {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": [HCM]}
    permissive = {"l": listener("10.0.0.5_9080", "10.0.0.5", 9080, tls_chain, plain_chain)}
    strict = {"l": listener("10.0.0.5_9080", "10.0.0.5", 9080, tls_chain)}
    mtls, plain = tls_for(AUTO, {"tls_match": {"tlsMode": "istio"}}), tls_for(AUTO, {"tls_match": {}})
    assert inbound_chain(permissive, "10.0.0.5", 9080, mtls)["accepts"] == "mutual TLS"
    assert inbound_chain(permissive, "10.0.0.5", 9080, plain)["accepts"] == "plaintext"
    refused = inbound_chain(strict, "10.0.0.5", 9080, plain)
    assert "accepts only tls" in refused["error"] and "PeerAuthentication" in refused["error"]
    assert "connection refused" in inbound_chain(strict, "10.0.0.5", 9090, mtls)["error"]
