"""Small proto helpers shared by the generators: durations, addresses, ADS config sources, Any packing."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, message, wrappers_pb2

from sailmesh.api.types import parse_duration

MAX_UINT32 = 4294967295


def duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration from seconds (nanosecond precision)."""
    d = duration_pb2.Duration()
    total_ns = round(seconds * 1e9)
    d.seconds, d.nanos = divmod(total_ns, 1_000_000_000)
    return d


def go_duration(text: object) -> duration_pb2.Duration:
    """A protobuf Duration from an Istio/Go duration string such as `1.5s`."""
    return duration(parse_duration(text))


def u32(value: int) -> wrappers_pb2.UInt32Value:
    """A UInt32Value wrapper."""
    return wrappers_pb2.UInt32Value(value=int(value))


def socket_address(ip: str, port: int) -> address_pb2.Address:
    """A TCP socket address."""
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=int(port)))


def ads() -> config_source_pb2.ConfigSource:
    """`ads: {}` with the v3 resource API, as Istio's clusters and listeners reference EDS/RDS."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=2)


def pack(msg: message.Message) -> any_pb2.Any:
    """Wrap a message in an Any, serialized deterministically (map fields sorted) so equal config gives
    byte-identical resources (the server skips unchanged ones)."""
    a = any_pb2.Any()
    a.Pack(msg, deterministic=True)
    return a


@dataclass(frozen=True)
class Prepacked:
    """A resource a generator assembled already serialized: its name and its Any; `content`, when given, is a
    hashable value that determines the Any's bytes (equal contents, byte-identical resources), so the generator
    can share one resource between scopes that built it separately."""

    name: str
    packed: any_pb2.Any
    content: Hashable | None = None

    @staticmethod
    def of(name: str, msg: message.Message) -> Prepacked:
        return Prepacked(name, pack(msg))


def fractional(pct: float) -> percent_pb2.FractionalPercent:
    """Istio's translatePercentToFractionalPercent: a 0..100 percentage over a denominator of a million."""
    return percent_pb2.FractionalPercent(
        numerator=round(pct * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )
