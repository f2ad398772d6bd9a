"""Dual-stack captured pods (Istio's GetIPMode Dual: the agent declares an IPv4 and an IPv6 address in INSTANCE_IPS,
as Istio's agent does with ISTIO_DUAL_STACK): getWildcardsAndLocalHost gives both wildcards, so virtualOutbound,
virtualInbound and the wildcard per-port listeners listen on `0.0.0.0` with `::` as their additional address, and
the REDIRECT inbound clusters and InboundPassthroughCluster leave from 127.0.0.6 with ::6 as the extra (IPv6)
source. An IPv4 pod's config is unchanged, and the IP mode is part of the proxies' scope key (shared outbound
config)."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from types import MappingProxyType

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from sailmesh.agent import bootstrap, podips
from sailmesh.cli import agent as agent_cli
from sailmesh.snapshot.model import ProxyView
from sailmesh.snapshot.node import proxy_view_from_node
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo_services, bookinfo_workloads, generated, make_snapshot, sidecar


def _proxy(instance_ips: str = "") -> ProxyView:
    meta = {"INTERCEPTION_MODE": "REDIRECT", **({"INSTANCE_IPS": instance_ips} if instance_ips else {})}
    return dataclasses.replace(sidecar(name="reviews-v1-0", ip="10.77.0.1", app_ports={9080: 9080}),
                               metadata=MappingProxyType(meta))


def test_ip_mode_follows_the_declared_addresses() -> None:
    assert _proxy().ip_mode == "IPv4" and _proxy("10.77.0.1").ip_mode == "IPv4"
    assert _proxy("10.77.0.1,fd77::1").ip_mode == "Dual"
    assert dataclasses.replace(_proxy(), ip="fd77::1").ip_mode == "IPv6"
    assert _proxy().scope_key != _proxy("10.77.0.1,fd77::1").scope_key


def _additional(lis: listener_pb2.Listener) -> list[str]:
    return [a.address.socket_address.address for a in lis.additional_addresses]


def test_dual_stack_listeners_add_the_ipv6_wildcard_and_clusters_the_ipv6_source() -> None:
    snapshot = make_snapshot((), bookinfo_services(), bookinfo_workloads())
    dual, v4 = _proxy("10.77.0.1,fd77::1"), _proxy()
    lis = generated(snapshot, dual, LISTENER, listener_pb2.Listener)
    for name in ("virtualOutbound", "virtualInbound", "0.0.0.0_9080"):
        assert lis[name].address.socket_address.address == "0.0.0.0" and _additional(lis[name]) == ["::"], name
        assert lis[name].additional_addresses[0].address.socket_address.port_value == \
            lis[name].address.socket_address.port_value
    assert not any(_additional(x) for x in generated(snapshot, v4, LISTENER, listener_pb2.Listener).values())
    clusters = generated(snapshot, dual, CLUSTER, cluster_pb2.Cluster)
    for name in ("inbound|9080||", "InboundPassthroughCluster"):
        bind = clusters[name].upstream_bind_config
        assert bind.source_address.address == "127.0.0.6", name
        assert [e.address.address for e in bind.extra_source_addresses] == ["::6"], name
    plain = generated(snapshot, v4, CLUSTER, cluster_pb2.Cluster)
    assert not plain["InboundPassthroughCluster"].upstream_bind_config.extra_source_addresses


IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
00000000000000000000000000000006 01 80 00 80       lo
fd770000000000000000000000000001 02 40 00 80  eth0
fe800000000000000000000000000001 02 40 20 80  eth0
"""


def test_a_dual_stack_agent_declares_the_pods_ipv6_addresses(tmp_path: pathlib.Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Istio's agent with ISTIO_DUAL_STACK declares every private address of the pod (network.GetPrivateIPs), the pod
    IP first: here the global IPv6 addresses of /proc/net/if_inet6 but loopback (lo's ::1, istio-iptables' ::6) and
    link-local ones; the control plane reads them as the proxy's IP mode."""
    monkeypatch.delenv("ISTIO_DUAL_STACK", raising=False)  # the flag's default comes from it
    path = tmp_path / "if_inet6"
    path.write_text(IF_INET6)
    assert podips.ipv6_addresses(str(path)) == ["fd77::1"]
    assert podips.ipv6_addresses(str(tmp_path / "missing")) == []
    monkeypatch.setattr(podips, "ipv6_addresses", lambda: ["fd77::1"])
    parser = argparse.ArgumentParser()
    agent_cli.add_arguments(parser)
    base = "--ip 10.77.0.1 --interception-mode REDIRECT --name reviews-v1-0".split()
    dual = agent_cli.config_from_args(parser.parse_args([*base, "--dual-stack"]))
    assert dual.extra_ips == ("fd77::1",)
    node = bootstrap.node(dual)
    assert node["metadata"]["INSTANCE_IPS"] == "10.77.0.1,fd77::1"
    assert proxy_view_from_node(node["id"], node["metadata"]).ip_mode == "Dual"
    assert agent_cli.config_from_args(parser.parse_args(base)).extra_ips == ()  # ISTIO_DUAL_STACK unset
