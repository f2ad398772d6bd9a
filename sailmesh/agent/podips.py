"""The pod's own IPv6 addresses from the kernel (/proc/net/if_inet6), which a dual-stack agent declares beside its
pod IP in INSTANCE_IPS (Istio's agent with ISTIO_DUAL_STACK: network.GetPrivateIPs; the control plane then builds
Istio's dual-stack listeners, generate/capture.py)."""

from __future__ import annotations

import ipaddress
import pathlib

IF_INET6 = "/proc/net/if_inet6"
GLOBAL_SCOPE = "00"


def ipv6_addresses(path: str = IF_INET6) -> list[str]:
    """Global-scope IPv6 addresses of the interfaces but loopback (lo carries istio-iptables' ::6), in file order;
    none when the file cannot be read."""
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[3] != GLOBAL_SCOPE or fields[5] == "lo" or len(fields[0]) != 32:
            continue
        address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        if not (address.is_loopback or address.is_link_local):
            out.append(str(address))
    return out
