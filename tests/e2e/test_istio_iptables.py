"""`sailmesh istio-iptables` for real: the injector's istio-init args, applied with Debian's iptables-restore /
ip6tables-restore and `ip` in a fresh network namespace, capture what Istio's rules capture
(sailmesh/testing/netns_capture.py does the connecting; every listener reports the connection's SO_ORIGINAL_DST
or IP6T_SO_ORIGINAL_DST, as Envoy's original_dst filter reads it): REDIRECT mode, DNS capture, an IPv6 pod, a
dual-stack pod and TPROXY mode.

Needs root (a second network namespace, a veth pair, a private mount namespace for /etc/resolv.conf, and children
running as UID 1337), `unshare`, `ip`, `mount` and `iptables-restore` (scripts/test installs Debian's iptables
package); skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from sailmesh.webhook.inject import InjectionConfig, iptables_args

pytestmark = pytest.mark.e2e


@cache
def _unavailable() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, a veth pair, a child as UID 1337)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"no `{tool}` here"
    if shutil.which("iptables-restore") is None and shutil.which("iptables-restore", path="/usr/sbin:/sbin") is None:
        return "no iptables-restore (Debian's iptables package; scripts/test installs it when run as root)"
    probe = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c",
                            "ip link add smp0 type veth peer name smp1 && iptables-restore --noflush </dev/null && "
                            "ip6tables-restore --noflush </dev/null && mount --bind /dev/null /etc/hostname"],
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    if probe.returncode != 0:
        return f"cannot use a network namespace with a veth and iptables here: {probe.stderr.strip()}"
    return ""


def capture(args: list[str], scenario: str = "redirect") -> dict[str, Any]:
    """Run the namespace probe (a new network and private mount namespace) with the istio-init container's args;
    its JSON result."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    for name in ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE", "CAPTURE_ALL_DNS", "DUAL_STACK", "ISTIO_DUAL_STACK"):
        env.pop(name, None)  # only the args decide
    done = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", sys.executable, "-m",
                           "sailmesh.testing.netns_capture", "--scenario", scenario, "--", *args],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result (rc {done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("iptables", {}).get("rc") == 0, (result, done.stderr)
    return result


def test_injected_istio_init_captures_outbound_and_inbound_but_not_the_proxy_nor_excluded_ports() -> None:
    # the args exactly as the injector writes them, with Istio's annotation for an excluded outbound port
    args = iptables_args({"traffic.sidecar.istio.io/excludeOutboundPorts": "8080"}, InjectionConfig())
    assert args[0] == "istio-iptables" and "-o" in args
    got = capture(args)
    # the app's outbound connection reaches the sidecar's 15001, which can read where it was going
    assert got["app_to_peer_80"]["listener"] == "outbound-capture"
    assert got["app_to_peer_80"]["original_dst"] == "10.77.0.2:80"
    # the sidecar's own traffic (UID/GID 1337) is never captured: it reaches the peer itself
    assert got["proxy_to_peer_80"] == {**got["proxy_to_peer_80"], "listener": "peer-80", "uid": 1337}
    # traffic.sidecar.istio.io/excludeOutboundPorts: 8080 goes straight out
    assert got["app_to_peer_8080"]["listener"] == "peer-8080"
    # 127.0.0.1 is never captured (Istio's `-d 127.0.0.1/32 -j RETURN`)
    assert got["app_to_localhost_9080"]["listener"] == "pod-app"
    # inbound: a peer calling the pod's app port reaches the sidecar's 15006 with the original destination
    assert got["peer_to_pod_9080"]["listener"] == "inbound-capture"
    assert got["peer_to_pod_9080"]["original_dst"] == "10.77.0.1:9080"
    # the status port (15021) is in istio-init's -d list: not captured
    assert got["peer_to_pod_15021"]["listener"] == "pod-status"
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in got["iptables"]["stdout"]  # iptables-save after applying


def test_outbound_ip_ranges_from_annotations_limit_what_is_captured() -> None:
    # includeOutboundIPRanges names another range and excludeInboundPorts the app port: the peer is not captured
    # outbound, and 9080 is not captured inbound
    args = iptables_args({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.99.0.0/16",
                          "traffic.sidecar.istio.io/excludeInboundPorts": "9080"}, InjectionConfig())
    got = capture(args)
    assert got["app_to_peer_80"]["listener"] == "peer-80"
    assert got["peer_to_pod_9080"]["listener"] == "pod-app"
    # and a range that holds the peer is captured, unless excludeOutboundIPRanges takes the address back out
    got = capture(iptables_args({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.77.0.0/16"},
                                InjectionConfig()))
    assert got["app_to_peer_80"]["listener"] == "outbound-capture"
    got = capture(iptables_args({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.77.0.0/16",
                                 "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.77.0.2/32"},
                                InjectionConfig()))
    assert got["app_to_peer_80"]["listener"] == "peer-80"


def test_dns_capture_sends_the_apps_queries_to_the_resolver_to_the_agent_and_the_proxys_upstream() -> None:
    # Istio's --redirect-dns: /etc/resolv.conf names the peer (10.77.0.2) as the resolver; the agent's DNS proxy
    # stand-in listens on 127.0.0.1:15053 as UID 1337
    got = capture([*iptables_args({}, InjectionConfig()), "--redirect-dns"], "dns")
    # the app's UDP query lands on the agent, and the answer comes back from the resolver's address (conntrack
    # zone 2 undoes the REDIRECT for the agent's answer, sent from its port 15053 as UID 1337)
    assert got["app_dns_udp"] == {"listener": "agent-dns-udp", "from": "10.77.0.2:53"}
    # DNS over TCP too, with the resolver as the original destination
    assert got["app_dns_tcp"]["listener"] == "agent-dns-tcp"
    assert got["app_dns_tcp"]["original_dst"] == "10.77.0.2:53"
    # the proxy's own queries (UID/GID 1337: the agent forwarding upstream) reach the resolver itself
    assert got["proxy_dns_udp"] == {"listener": "peer-dns-udp", "from": "10.77.0.2:53", "uid": 1337}
    assert got["proxy_dns_tcp"]["listener"] == "peer-dns-tcp"
    # only the resolvers of resolv.conf are captured (no --capture-all-dns): another port-53 server is reached
    assert got["app_dns_udp_not_a_resolver"] == {"listener": "peer-dns-udp-other", "from": "10.77.0.9:53"}
    # and the rest of the capture is unchanged
    assert got["app_to_peer_80"]["listener"] == "outbound-capture"
    assert got["peer_to_pod_9080"]["listener"] == "inbound-capture"
    # iptables-save's spelling of Istio's raw rule `-p udp --dport 53 -d 10.77.0.2/32 -j CT --zone 2`
    assert "-A ISTIO_OUTPUT_DNS -d 10.77.0.2/32 -p udp -m udp --dport 53 -j CT --zone 2" in got["iptables"]["stdout"]


def ipv6_claims(got: dict[str, Any]) -> None:
    """What an IPv6 pod's capture must do, as the IPv4 one."""
    assert got["app_to_peer6_80"]["listener"] == "outbound-capture"
    assert got["app_to_peer6_80"]["original_dst"] == "[fd77::2]:80"  # IP6T_SO_ORIGINAL_DST
    assert got["proxy_to_peer6_80"] == {**got["proxy_to_peer6_80"], "listener": "peer-80", "uid": 1337}
    assert got["app_to_localhost6_9080"]["listener"] == "pod-app"  # ::1 is never captured
    assert got["peer_to_pod6_9080"]["listener"] == "inbound-capture"
    assert got["peer_to_pod6_9080"]["original_dst"] == "[fd77::1]:9080"
    assert got["peer_to_pod6_15021"]["listener"] == "pod-status"


def test_an_ipv6_pod_is_captured_by_ip6tables_with_the_injectors_args_unchanged() -> None:
    # the veth has IPv6 addresses only: istio-iptables finds the pod is IPv6 (Istio's getLocalIP) by itself
    got = capture(iptables_args({}, InjectionConfig()), "ipv6")
    ipv6_claims(got)
    # ip6tables-save's spelling of Istio's `-o lo -s ::6/128 -j RETURN`
    assert "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" in got["iptables"]["stdout"]


def test_a_dual_stack_pod_is_captured_in_both_families_with_dual_stack() -> None:
    got = capture([*iptables_args({}, InjectionConfig()), "--dual-stack"], "dual")
    ipv6_claims(got)
    assert got["app_to_peer_80"]["original_dst"] == "10.77.0.2:80"
    assert got["peer_to_pod_9080"]["original_dst"] == "10.77.0.1:9080"
    assert got["proxy_to_peer_80"]["listener"] == "peer-80"


def test_tproxy_mode_hands_inbound_connections_to_the_transparent_listener_with_the_destination_intact() -> None:
    # Istio's sidecar.istio.io/interceptionMode: TPROXY reaches istio-init as `-m TPROXY`
    got = capture(iptables_args({"sidecar.istio.io/interceptionMode": "TPROXY"}, InjectionConfig()), "tproxy")
    # no NAT: the inbound listener (15006, IP_TRANSPARENT as Envoy's) accepted a connection whose local address is
    # still the pod's 9080 (mangle ISTIO_TPROXY; the handshake's last ACK went through ISTIO_DIVERT)
    assert got["peer_to_pod_9080"]["listener"] == "inbound-capture"
    assert got["peer_to_pod_9080"]["local"] == "10.77.0.1:9080"
    assert got["peer_to_pod_15021"]["listener"] == "pod-status"  # excluded inbound port
    assert "fwmark 0x539 lookup 133" in got["ip_rules"]  # `ip rule add fwmark 1337 lookup 133`
    # outbound stays nat REDIRECT in TPROXY mode, the proxy's own traffic uncaptured
    assert got["app_to_peer_80"]["original_dst"] == "10.77.0.2:80"
    assert got["proxy_to_peer_80"]["listener"] == "peer-80"
    assert "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY" in got["iptables"]["stdout"]


def test_capture_all_dns_takes_every_port_53_destination_but_still_not_the_proxys() -> None:
    # Istio's --capture-all-dns (the CNI case: resolv.conf is not read): a port-53 server that is not the resolver is
    # captured too, and the answer still comes back from the address the app asked
    got = capture([*iptables_args({}, InjectionConfig()), "--redirect-dns", "--capture-all-dns"], "dns")
    assert got["app_dns_udp_not_a_resolver"] == {"listener": "agent-dns-udp", "from": "10.77.0.9:53"}
    assert got["app_dns_udp"] == {"listener": "agent-dns-udp", "from": "10.77.0.2:53"}
    assert got["proxy_dns_udp"]["listener"] == "peer-dns-udp"
    assert got["proxy_dns_tcp"]["listener"] == "peer-dns-tcp"
