"""Istio's DNS auto-allocation (ISTIO_META_DNS_AUTO_ALLOCATE): a ServiceEntry host without `addresses` gets a VIP
from the Class E range 240.240.0.0/16, so that a captured app resolving it through the agent's DNS proxy connects
to an address that names the service (TCP ServiceEntries on one port need distinct VIP listeners).

The allocation is Istio's autoAllocateIPs (pilot/pkg/serviceregistry/serviceentry): candidates are ServiceEntry
services with no address, a non-wildcard host and a resolution other than NONE; each takes the slot FNV-1a-32 of
`namespace/hostname` modulo 255*255, on a collision the double hash `(h + i * (65011 - h % 65011)) % (255*255 - 1)`;
slots are then numbered from 1 in order, skipping numbers divisible by 255 (no .0 address), and number x is
`240.240.<x / 255>.<x % 255>`. Istio feeds the candidates in its registry's order; sailmesh in (namespace,
hostname) order, which only matters when two keys collide. A proxy uses the addresses when it declares both
DNS_CAPTURE and DNS_AUTO_ALLOCATE (Istio's GetAddressForProxy). Pure, no cache: computed
only for proxies that use it, over the snapshot's few ServiceEntry candidates.
"""

from __future__ import annotations

from collections.abc import Mapping

from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service

MAX_IPS = 255 * 255
PRIME = 65011  # the largest prime below MAX_IPS (Istio's secondary hash)
FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193


def fnv1a32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a)."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def is_candidate(service: Service) -> bool:
    """A ServiceEntry host Istio allocates for: no address, not a wildcard, resolution not NONE."""
    return (service.origin.startswith("ServiceEntry ") and not service.addresses and "*" not in service.hostname
            and service.resolution != "NONE")


def allocate(keys: tuple[str, ...]) -> Mapping[str, str]:
    """`namespace/hostname` -> its 240.240.x.y address, for the candidates' keys in order."""
    slots: dict[int, str] = {}
    for key in keys[:MAX_IPS]:
        h = fnv1a32(key.encode())
        slot = h % MAX_IPS
        if slot in slots:
            step, i = PRIME - h % PRIME, 1
            while True:
                slot = (h + i * step) % (MAX_IPS - 1)
                if slot not in slots:
                    break
                i += 1
        slots[slot] = key
    out: dict[str, str] = {}
    bumps = 0
    for slot in sorted(slots):
        x = slot + 1 + bumps
        if x % 255 == 0:
            x += 1
            bumps += 1
        out.setdefault(slots[slot], f"240.240.{x // 255}.{x % 255}")
    return out


def allocated(snapshot: MeshSnapshot) -> Mapping[str, str]:
    """Hostname -> auto-allocated address of every candidate in the snapshot."""
    candidates = sorted((s.namespace, s.hostname) for s in snapshot.services.values() if is_candidate(s))
    by_key = allocate(tuple(f"{ns}/{host}" for ns, host in candidates))
    return {host: by_key[f"{ns}/{host}"] for ns, host in candidates}


def uses_auto_allocation(proxy: ProxyView) -> bool:
    """Whether the proxy asked for auto-allocated addresses (node metadata DNS_CAPTURE and DNS_AUTO_ALLOCATE)."""
    return all(str(proxy.metadata.get(k, "")).lower() == "true" for k in ("DNS_CAPTURE", "DNS_AUTO_ALLOCATE"))


def ipv6_form(ipv4: str) -> str:
    """The IPv6 twin of an auto-allocated 240.240.a.b address, as Istio's setAutoAllocatedIPs writes it:
    `2001:2::f0f0:%x` of b when a is 0, else `2001:2::f0f0:%x%x` of a and b (hex digits run together)."""
    a, b = (int(o) for o in ipv4.split(".")[2:])
    return f"2001:2::f0f0:{b:x}" if a == 0 else f"2001:2::f0f0:{a:x}{b:x}"


def for_proxy(snapshot: MeshSnapshot, proxy: ProxyView) -> Mapping[str, str]:
    """Hostname -> auto-allocated address as the proxy sees them (empty unless it uses auto-allocation; the IPv6
    form for an IPv6-only proxy, as Istio's GetAddressForProxy); compute it once per proxy and pass it to
    addresses()."""
    if not uses_auto_allocation(proxy):
        return {}
    if ":" in proxy.ip:
        return {host: ipv6_form(v4) for host, v4 in allocated(snapshot).items()}
    return allocated(snapshot)


def addresses(service: Service, auto: Mapping[str, str]) -> tuple[str, ...]:
    """The service's own addresses, else its auto-allocated one (`auto`: for_proxy)."""
    if service.addresses or service.hostname not in auto:
        return service.addresses
    return (auto[service.hostname],)
