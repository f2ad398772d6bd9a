"""Envoy in TPROXY interception mode (node metadata INTERCEPTION_MODE=TPROXY, from the pod annotation
`sidecar.istio.io/interceptionMode: TPROXY`), as Istio's listener builder does it:

- `virtualOutbound` is `transparent: true` (IP_TRANSPARENT: Envoy may accept connections addressed elsewhere);
- inbound traffic arrives through the mangle table's TPROXY target on 15006 (sailmesh/iptables/tproxy.py) with its
  original destination kept: a `virtualInbound` listener on 0.0.0.0:15006, transparent, with Istio's listener
  filters original_dst then original_src (mark 1337: the app's replies are routed back to Envoy by the fwmark rule
  istio-iptables installs), whose filter chains are the proxy's inbound listeners' chains, each matched on its
  destination port. (The per-port inbound listeners stay, for connections that are not captured.)

Pure: listeners in, listeners out. Envoy needs CAP_NET_ADMIN for transparent sockets: the injector gives the TPROXY
pod's proxy that capability (webhook/inject.py), as Istio's template.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from google.protobuf import wrappers_pb2

from sailmesh.generate import names
from sailmesh.generate.common import pack, socket_address
from sailmesh.generate.tls import needs_tls_inspector, tls_inspector
from sailmesh.snapshot.model import ProxyView

TPROXY = "TPROXY"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
ORIGINAL_SRC = "envoy.filters.listener.original_src"
PROXY_MARK = 1337  # Istio's OriginalSrc mark: istio-iptables routes packets with it to the local table


def is_tproxy(proxy: ProxyView) -> bool:
    """Whether the proxy's traffic is intercepted with TPROXY (Istio's GetInterceptionMode)."""
    return str(proxy.metadata.get("INTERCEPTION_MODE", "")).upper() == TPROXY


def virtual_inbound(inbound: Sequence[listener_pb2.Listener], port: int) -> listener_pb2.Listener:
    """`virtualInbound` on 0.0.0.0:`port` serving every inbound listener's chains by destination port."""
    listener = listener_pb2.Listener(
        name=names.VIRTUAL_INBOUND, address=socket_address("0.0.0.0", port), traffic_direction=base_pb2.INBOUND,
        transparent=wrappers_pb2.BoolValue(value=True),
        listener_filters=[
            lc.ListenerFilter(name=ORIGINAL_DST, typed_config=pack(original_dst_pb2.OriginalDst())),
            lc.ListenerFilter(name=ORIGINAL_SRC, typed_config=pack(original_src_pb2.OriginalSrc(mark=PROXY_MARK))),
        ],
    )
    seen: set[str] = set()
    for source in inbound:
        dest_port = source.address.socket_address.port_value
        for i, chain in enumerate(source.filter_chains):
            fc = lc.FilterChain()
            fc.CopyFrom(chain)
            fc.filter_chain_match.destination_port.value = dest_port
            name = fc.name or f"0.0.0.0_{dest_port}"
            fc.name = name if name not in seen else f"{name}_{i}"  # chain names are unique in a listener
            seen.add(fc.name)
            listener.filter_chains.append(fc)
    if needs_tls_inspector(list(listener.filter_chains)):
        listener.listener_filters.append(tls_inspector())
        listener.continue_on_listener_filters_timeout = True
    return listener


def apply(proxy: ProxyView, listeners: list[listener_pb2.Listener], inbound_port: int) -> list[listener_pb2.Listener]:
    """The sidecar's listeners for TPROXY mode (unchanged for any other mode)."""
    if proxy.type != "sidecar" or not is_tproxy(proxy):
        return listeners
    inbound = [lis for lis in listeners if lis.traffic_direction == base_pb2.INBOUND]
    for lis in listeners:
        if lis.name == names.VIRTUAL_OUTBOUND:
            lis.transparent.value = True
    return [*listeners, virtual_inbound(inbound, inbound_port)]
