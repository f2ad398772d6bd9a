"""A pod captured in Istio's REDIRECT mode (the default interceptionMode) with a real Envoy on generated config: in
private network namespaces (root), with the injector's istio-iptables rules, a peer's connection to the pod's 9080
reaches the app (which owns 0.0.0.0:9080) through Envoy's virtualInbound on 15006, and a connection to a port no
service declares passes through to the app (InboundPassthroughCluster)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
from types import MappingProxyType
from typing import Any

import pytest

from sailmesh.processes import envoy_binary, free_port
from sailmesh.testing.netns_capture import POD_IP, POD_IP6
from sailmesh.webhook.inject import InjectionConfig, iptables_args
from tests.conftest import ROOT
from tests.e2e.redirect_netns import SNIFFED_PORT
from tests.e2e.test_generate_envoy import static_bootstrap, write_bootstrap
from tests.unit.test_generate_support import bookinfo_services, bookinfo_workloads, make_snapshot, service, sidecar

pytestmark = pytest.mark.e2e
PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _redirect_bootstrap(tmp_path: pathlib.Path, admin: int, ip: str = POD_IP, dual: bool = False) -> pathlib.Path:
    # as in a pod: the app on its own port 9080, the node metadata the injected agent sends (REDIRECT; a dual-stack
    # pod's agent declares both addresses)
    meta = {"INTERCEPTION_MODE": "REDIRECT", **({"INSTANCE_IPS": f"{ip},{POD_IP6}"} if dual else {})}
    proxy = dataclasses.replace(sidecar(name="reviews-v1-0", ip=ip, app_ports={9080: 9080}),
                                metadata=MappingProxyType(meta))
    # reviews also serves 7071 for a service that declares no protocol there (sniffed)
    services = [*bookinfo_services(), service("reviews-sniffed", ports=((SNIFFED_PORT, "UNKNOWN"),),
                                              selector={"app": "reviews"})]
    snapshot = make_snapshot((), services, bookinfo_workloads())
    return write_bootstrap(tmp_path, static_bootstrap(snapshot, proxy, admin))


def test_envoy_validates_redirect_config(tmp_path: pathlib.Path) -> None:
    path = _redirect_bootstrap(tmp_path, free_port())
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                        "-l", "warning"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


def _unavailable() -> str:
    if os.geteuid() != 0:
        return "needs root: network namespaces, a veth pair, iptables, Envoy as UID 1337"
    if shutil.which("iptables-restore", path=PATH) is None:
        return "no iptables-restore (Debian's iptables package; scripts/test installs it when run as root)"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link add smp0 type veth peer name smp1 && "
                            "iptables-restore --noflush </dev/null"],
                           capture_output=True, text=True, timeout=30, env={**os.environ, "PATH": PATH})
    return "" if probe.returncode == 0 else f"no network namespace with a veth and iptables: {probe.stderr[-300:]}"


def _run(tmp_path: pathlib.Path, ipv6: bool = False, dual: bool = False) -> dict[str, Any]:
    # in the private namespace: no other Envoy
    path = _redirect_bootstrap(tmp_path, 15000, POD_IP6 if ipv6 else POD_IP, dual)
    args = iptables_args({}, InjectionConfig())  # exactly the injected istio-init's: -m REDIRECT -b '*'
    assert args[args.index("-m") + 1] == "REDIRECT"
    if dual:  # Istio's ISTIO_DUAL_STACK for istio-init: both families captured
        args = [*args, "--dual-stack"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": PATH, "REDIRECT_NETNS_IPV6": "1" if ipv6 else "",
           "REDIRECT_NETNS_DUAL": "1" if dual else ""}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.e2e.redirect_netns", str(path), "15000",
                           "--", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result (rc {done.returncode}): {done.stderr[-3000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    return got


def test_ipv6_only_pod_is_served_on_ipv6_wildcards_from_the_ipv6_passthrough_source(tmp_path: pathlib.Path) -> None:
    """An IPv6-only pod (Istio's getWildcardsAndLocalHost IPv6, InboundPassthroughBindIpv6): virtualInbound on
    `[::]:15006` takes the peer's IPv6 connection (ip6tables REDIRECT), the inbound cluster reaches the app from ::6,
    and a port no service declares passes through from ::6 too."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(tmp_path, ipv6=True)
    assert got.get("status") == 200, got
    assert json.loads(got["body"])["peer"] == "::6" and got["server"] == "istio-envoy"
    assert "upstream_rq_total: 1" in got["inbound_cluster_stats"], got
    assert got["unlisted"].get("status") == 200 and json.loads(got["unlisted"]["body"])["peer"] == "::6", got
    assert got["unlisted_raw"].get("answer", "").startswith("HTTP/1.1 200"), got


def test_dual_stack_pod_is_served_on_both_wildcards_from_both_passthrough_sources(tmp_path: pathlib.Path) -> None:
    """A dual-stack pod (its agent declares both addresses: Istio's GetIPMode Dual with ISTIO_DUAL_STACK;
    istio-iptables `--dual-stack` captures both families): virtualInbound listens on 0.0.0.0:15006 and, as its
    additional address, [::]:15006 (Istio's getWildcardsAndLocalHost for Dual), so the peer's IPv4 and IPv6
    connections to 9080 both reach the app (sailmesh's inbound cluster connects to the pod's first address, IPv4,
    from 127.0.0.6; Istio's is ORIGINAL_DST), and an IPv6 connection to a port no service declares passes through
    InboundPassthroughCluster from ::6 (Envoy's extra_source_addresses beside 127.0.0.6: Istio's
    InboundPassthroughBindIpv6). Without the IPv6 wildcard the IPv6 connections are refused."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(tmp_path, dual=True)
    assert got.get("status") == 200 and got["server"] == "istio-envoy", got
    assert json.loads(got["body"])["peer"] == "127.0.0.6"
    v6 = got["ipv6"]
    assert v6.get("status") == 200 and v6["server"] == "istio-envoy", got
    assert json.loads(v6["body"])["peer"] == "127.0.0.6"
    unlisted = got["ipv6_unlisted"]
    assert unlisted.get("status") == 200 and json.loads(unlisted["body"])["peer"] == "::6", got
    [vin] = [s for s in got["listeners"]["listener_statuses"] if s["name"] == "virtualInbound"]
    assert vin["local_address"]["socket_address"]["address"] == "0.0.0.0", vin
    assert [a["socket_address"]["address"] for a in vin.get("additional_local_addresses", ())] == ["::"], vin


def test_captured_inbound_reaches_the_app_through_virtual_inbound(tmp_path: pathlib.Path) -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    got = _run(tmp_path)
    assert got.get("status") == 200, got
    body = json.loads(got["body"])
    assert body["app"] == "reviews" and got["server"] == "istio-envoy"  # Envoy's inbound HCM answered
    # it went through 15006 (virtualInbound) into the inbound cluster, which leaves from Istio's 127.0.0.6
    assert "downstream_cx_total: 1" in got["virtual_inbound_stats"], got
    assert "upstream_rq_total: 1" in got["inbound_cluster_stats"], got
    assert body["peer"] == "127.0.0.6"
    # a port with no inbound listener passes through virtualInbound (Istio's InboundPassthroughCluster), from the
    # passthrough source too; an HTTP request there takes Istio's `virtualInbound-catchall-http` chain (an HCM:
    # Envoy's server header, one request on its stats), a raw TCP line the TCP passthrough chain
    unlisted = got["unlisted"]
    assert unlisted.get("status") == 200, got
    assert json.loads(unlisted["body"])["peer"] == "127.0.0.6" and unlisted.get("server") == "istio-envoy"
    assert "upstream_cx_total: 1" in got["inbound_passthrough_stats"], got
    assert got["unlisted_raw"].get("answer", "").startswith("HTTP/1.1 200"), got
    stats = dict(line.split(": ") for line in got["chain_stats"].splitlines())
    assert stats["http.InboundPassthroughCluster.downstream_rq_total"] == "1", stats
    assert stats["tcp.InboundPassthroughCluster.downstream_cx_total"] == "1", stats
    # a declared port without a declared protocol is sniffed: HTTP by its inbound HCM, a raw line by its TCP chain
    assert got["sniffed"].get("status") == 200 and got["sniffed"].get("server") == "istio-envoy", got
    assert got["sniffed_raw"].get("answer", "").startswith("HTTP/1.1 200"), got
    assert stats[f"http.inbound_0.0.0.0_{SNIFFED_PORT}.downstream_rq_total"] == "1", stats
    assert stats[f"tcp.inbound|{SNIFFED_PORT}||.downstream_cx_total"] == "1", stats
    # the per-port inbound listener exists but binds nothing (the app owns 0.0.0.0:9080)
    names = [s["name"] for s in got["listeners"]["listener_statuses"]]
    assert f"{POD_IP}_9080" in names and "virtualInbound" in names
