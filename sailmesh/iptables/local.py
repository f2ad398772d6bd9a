"""What istio-iptables reads from the pod itself: whether its addresses make it an IPv6 pod (Istio's getLocalIP).

Istio takes the first address that is not loopback or link-local, in the kernel's order (IPv4 before IPv6): the
pod is IPv6 when that address is; with `--dual-stack` (ISTIO_DUAL_STACK) it is IPv6 as soon as it has any such
IPv6 address. Addresses come from the kernel: IPv4 from SIOCGIFADDR per interface, IPv6 from /proc/net/if_inet6.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SIOCGIFADDR = 0x8915
IF_INET6 = "/proc/net/if_inet6"


@dataclass(frozen=True)
class PodAddresses:
    """The pod's addresses that count (not loopback, not link-local), per family."""

    v4: tuple[str, ...]
    v6: tuple[str, ...]

    def ipv6(self, dual_stack: bool) -> bool:
        """Istio's EnableIPv6 for these addresses."""
        return bool(self.v6) and (dual_stack or not self.v4)


def _counts(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (addr.is_loopback or addr.is_link_local or addr.is_multicast)


def _ipv4() -> list[str]:
    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            addr = ipaddress.IPv4Address(raw[20:24])
            if _counts(addr):
                out.append(str(addr))
    return out


def _ipv6() -> list[str]:
    try:
        text = Path(IF_INET6).read_text(encoding="ascii")
    except OSError:  # no IPv6 in this kernel
        return []
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            addr = ipaddress.IPv6Address(bytes.fromhex(words[0]))
            if _counts(addr):
                out.append(str(addr))
    return out


def pod_addresses() -> PodAddresses:
    """This network namespace's addresses that count."""
    return PodAddresses(tuple(_ipv4()), tuple(_ipv6()))
