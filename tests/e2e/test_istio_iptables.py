"""`sailmesh istio-iptables` for real: the injector's istio-init args, applied with Debian's iptables-restore in a
fresh network namespace, capture what Istio's rules capture (sailmesh/testing/netns_capture.py does the
connecting; every listener reports the connection's SO_ORIGINAL_DST, as Envoy's original_dst filter reads it).

Needs root (a second network namespace, a veth pair, and a child running as UID 1337), `unshare`, `ip` and
`iptables-restore` (scripts/test installs Debian's iptables package); skips with the reason otherwise.
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
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no `{tool}` here"
    if shutil.which("iptables-restore") is None and shutil.which("iptables-restore", path="/usr/sbin:/sbin") is None:
        return "no iptables-restore (Debian's iptables package; scripts/test installs it when run as root)"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link add smp0 type veth peer name smp1 && "
                            "iptables-restore --noflush </dev/null"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    if probe.returncode != 0:
        return f"cannot use a network namespace with a veth and iptables here: {probe.stderr.strip()}"
    return ""


def capture(args: list[str]) -> dict[str, Any]:
    """Run the namespace probe with the istio-init container's args; its JSON result."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    done = subprocess.run(["unshare", "-n", sys.executable, "-m", "sailmesh.testing.netns_capture", "--", *args],
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
