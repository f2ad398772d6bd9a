"""The agent's Envoy bootstrap: Istio's node identity and metadata, the xds-grpc cluster, ADS, ports."""

from __future__ import annotations

import json

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers @type)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.resource_monitors.downstream_connections.v3 import downstream_connections_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from sailmesh import __version__
from sailmesh.agent import bootstrap
from sailmesh.agent.config import AgentConfig


def _cfg(**kw: object) -> AgentConfig:
    base: dict[str, object] = {
        "ip": "127.0.1.2",
        "name": "reviews-v1-0",
        "namespace": "bookinfo",
        "labels": {"app": "reviews", "version": "v1"},
        "service_account": "bookinfo-reviews",
        "app_ports": ((9080, 41234), (9090, 41235)),
        "xds_host": "127.0.0.1",
        "xds_port": 15010,
    }
    base.update(kw)
    return AgentConfig(**base)  # type: ignore[arg-type]


def test_node_id_is_istios_sidecar_form() -> None:
    # Istio: <type>~<ip>~<pod>.<ns>~<ns>.svc.<domain> (pkg/model/context.go ServiceNode)
    n = bootstrap.node(_cfg())
    assert n["id"] == "sidecar~127.0.1.2~reviews-v1-0.bookinfo~bookinfo.svc.cluster.local"
    assert n["cluster"] == "reviews.bookinfo"


def test_router_node_id() -> None:
    n = bootstrap.node(_cfg(proxy_type="router", name="istio-ingressgateway-0", labels={"istio": "ingressgateway"}))
    assert n["id"].startswith("router~127.0.1.2~istio-ingressgateway-0.bookinfo~")
    assert n["cluster"] == "istio-ingressgateway-0.bookinfo"  # no app label: the pod name


def test_node_metadata_keys() -> None:
    md = bootstrap.node(_cfg())["metadata"]
    assert md["NAMESPACE"] == "bookinfo"
    assert md["NAME"] == "reviews-v1-0"
    assert md["LABELS"] == {"app": "reviews", "version": "v1"}
    assert md["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert md["INSTANCE_IPS"] == "127.0.1.2"
    assert md["APP_PORTS"] == "9080:41234,9090:41235"
    assert md["PROXY_TYPE"] == "sidecar"
    assert md["SAILMESH_VERSION"] == __version__
    assert md["CLUSTER_ID"] == "Kubernetes"


def test_admin_and_prometheus_bind_the_pod_ip() -> None:
    b = bootstrap.build(_cfg(admin_port=15000, stats_port=15090))
    assert b["admin"]["address"]["socket_address"] == {"address": "127.0.1.2", "port_value": 15000}
    (stats,) = [li for li in b["static_resources"]["listeners"] if li["name"] == "prometheus_stats"]
    assert stats["address"]["socket_address"] == {"address": "127.0.1.2", "port_value": 15090}
    hcm = stats["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": "prometheus_stats"}}
    (admin_cluster,) = [c for c in b["static_resources"]["clusters"] if c["name"] == "prometheus_stats"]
    ep = admin_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": "127.0.1.2", "port_value": 15000}


def test_xds_cluster_speaks_http2_to_the_control_plane() -> None:
    c = bootstrap.xds_cluster(_cfg(xds_port=25010))
    assert c["name"] == "xds-grpc" and c["type"] == "STATIC"
    ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 25010}
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert bootstrap.xds_cluster(_cfg(xds_host="istiod.example"))["type"] == "STRICT_DNS"


def test_xds_tls_allows_tls_1_3() -> None:
    """Envoy's upstream TLS maximum defaults to 1.2; the xDS connection goes to 1.3, as Istio's (its agent's Go TLS)
    does. Parsed as Envoy's UpstreamTlsContext, so the enum names are Envoy's."""
    from envoy.config.core.v3 import base_pb2
    from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

    socket = json_format.ParseDict(bootstrap.xds_cluster(_cfg(), "/secrets")["transport_socket"],
                                   base_pb2.TransportSocket())
    ctx = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(ctx)
    params = ctx.common_tls_context.tls_params
    assert (params.tls_minimum_protocol_version, params.tls_maximum_protocol_version) == (
        common_pb2.TlsParameters.TLSv1_2, common_pb2.TlsParameters.TLSv1_3)


@pytest.mark.parametrize(("delta", "api_type"), [(False, "GRPC"), (True, "DELTA_GRPC")])
def test_ads_config(delta: bool, api_type: str) -> None:
    d = bootstrap.dynamic_resources(_cfg(delta=delta, initial_fetch_timeout_s=2.5))
    ads = d["ads_config"]
    assert ads["api_type"] == api_type
    assert ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
    for key in ("lds_config", "cds_config"):
        assert d[key] == {"ads": {}, "initial_fetch_timeout": "2.500s", "resource_api_version": "V3"}


def test_stats_tags_use_istios_names() -> None:
    s = bootstrap.stats_config()
    names = {t["tag_name"] for t in s["stats_tags"]}
    assert s["use_all_default_tags"] is False
    assert {"cluster_name", "response_code", "response_code_class", "http_conn_manager_prefix",
            "listener_address"} <= names
    # not the tags of Istio's istio.stats stat names (the agent counts those metrics; each unanchored regex runs
    # on every stat name Envoy creates)
    assert not {"reporter", "destination_service", "source_workload"} & names


def test_stats_flush_every_second_so_istios_histograms_keep_up_with_the_counters() -> None:
    # Istio's HTTP metrics are Envoy histograms (the stats access logger): merged into the page at each flush
    b = bootstrap.build(_cfg())
    assert b["stats_flush_interval"] == "1s"
    boot = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(b, boot)
    assert boot.stats_flush_interval.seconds == 1


def test_overload_manager_caps_downstream_connections() -> None:
    b = bootstrap.build(_cfg(max_downstream_connections=1234))
    (mon,) = b["overload_manager"]["resource_monitors"]
    assert mon["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert mon["typed_config"]["max_active_downstream_connections"] == 1234


def test_bootstrap_parses_as_envoy_bootstrap_proto() -> None:
    extra = {"clusters": [{"name": "extra", "type": "STATIC", "connect_timeout": "1s"}]}
    text = bootstrap.to_json(bootstrap.build(_cfg(), extra))
    msg = json_format.Parse(text, bootstrap_pb2.Bootstrap())
    assert msg.node.id.startswith("sidecar~")
    assert msg.node.metadata["LABELS"]["version"] == "v1"
    assert [c.name for c in msg.static_resources.clusters] == ["xds-grpc", "prometheus_stats", "extra"]
    assert json.loads(text)["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
