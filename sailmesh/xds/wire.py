"""Protobuf wire format by hand: resources assembled from cached serialized parts instead of message copies."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """An unsigned varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def length_delimited(field_number: int, data: bytes) -> bytes:
    """One length-delimited field (string, bytes or message) in wire format."""
    return varint(field_number << 3 | 2) + varint(len(data)) + data


def varint_field(field_number: int, value: int) -> bytes:
    """One varint field (int, bool, enum) in wire format."""
    return varint(field_number << 3) + varint(value)
