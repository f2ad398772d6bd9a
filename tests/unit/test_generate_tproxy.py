"""Envoy's listeners in TPROXY interception mode, as Istio builds them (transparent listeners, virtualInbound)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2

from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_support import bookinfo, generated, sidecar

TPROXY = MappingProxyType({"INTERCEPTION_MODE": "TPROXY"})


def _listeners(metadata: MappingProxyType[str, str] | None = None) -> dict[str, listener_pb2.Listener]:
    proxy = sidecar(name="reviews-v1-0", ip="127.0.1.3", app_ports={9080: 41000})
    if metadata is not None:
        proxy = dataclasses.replace(proxy, metadata=metadata)
    return generated(bookinfo(), proxy, LISTENER, listener_pb2.Listener)


def test_tproxy_listeners_are_transparent_and_inbound_keeps_the_original_source() -> None:
    """Istio: virtualOutbound transparent; virtualInbound (15006) transparent with the original_dst and
    original_src (mark 1337) listener filters; each inbound port's chains matched by destination port."""
    lis = _listeners(TPROXY)
    assert lis["virtualOutbound"].transparent.value is True
    vin = lis["virtualInbound"]
    assert vin.transparent.value is True
    assert (vin.address.socket_address.address, vin.address.socket_address.port_value) == ("0.0.0.0", 15006)
    assert [f.name for f in vin.listener_filters][:2] == ["envoy.filters.listener.original_dst",
                                                          "envoy.filters.listener.original_src"]
    src = original_src_pb2.OriginalSrc()
    assert vin.listener_filters[1].typed_config.Unpack(src) and src.mark == 1337
    per_port = lis["127.0.1.3_9080"]
    assert [c.filter_chain_match.destination_port.value for c in vin.filter_chains] == \
        [9080] * len(per_port.filter_chains)
    assert [c.filters for c in vin.filter_chains] == [c.filters for c in per_port.filter_chains]
    assert len({c.name for c in vin.filter_chains}) == len(vin.filter_chains)  # unique names, as Envoy wants


def test_other_modes_are_unchanged() -> None:
    plain = _listeners()
    assert plain == _listeners(MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))
    assert "virtualInbound" not in plain and not plain["virtualOutbound"].HasField("transparent")
