"""Envoy's xDS keepalive pings are within what the control plane's gRPC server accepts.

Envoy pings its xDS connection (the bootstrap's http2 connection_keepalive interval, 30 s) on a stream that is
usually idle. gRPC's server by default accepts one such ping per 5 minutes and answers the third early one with
GOAWAY too_many_pings: on the demo every proxy reconnected every ~2 min 10 s (Envoy's xds-grpc
upstream_cx_protocol_error and close_notify counted each) and was sent its whole config again. Istio's istiod
allows a ping every 15 s, with or without a stream (keepalive.EnforcementPolicy{MinTime: 15s,
PermitWithoutStream: true}).
"""

from __future__ import annotations

from sailmesh.agent import bootstrap
from sailmesh.agent.config import AgentConfig
from sailmesh.server.ads import SERVER_OPTIONS


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def test_the_servers_ping_policy_allows_envoys_keepalive() -> None:
    cluster = bootstrap.xds_cluster(AgentConfig(name="p", namespace="default", ip="127.0.0.2"))
    h2 = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"]["http2_protocol_options"]
    interval_s = _seconds(h2["connection_keepalive"]["interval"])
    options = dict(SERVER_OPTIONS)
    # the server's minimum time between pings on a connection without data (gRPC's default is 300 s)
    assert options.get("grpc.http2.min_ping_interval_without_data_ms", 300_000) / 1000 <= interval_s, options
    assert options.get("grpc.http2.min_ping_interval_without_data_ms") == 15_000  # Istio's MinTime
    assert options.get("grpc.keepalive_permit_without_calls") == 1  # Istio's PermitWithoutStream
