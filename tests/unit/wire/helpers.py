"""What the codec tests share: the Drop assertion, and scapy packets made
from our bytes (scapy is the independent oracle, STYLE.md §5).

Addresses in tests are written as text and converted with ``parse_ip`` /
``format_ip`` from ``shardnet.common.addr``; pseudo-header sums come from
``shardnet.common.checksum.pseudo_header`` (or ``icmpv6_pseudo``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from shardnet.common.wire.errors import Drop, MalformedPacket


def assert_drop(
    reason: Drop, layer: str, fn: Callable[..., object], *args: Any, **kwargs: Any
) -> MalformedPacket:
    """``fn(*args, **kwargs)`` raises MalformedPacket for ``reason`` at
    ``layer`` (never judged by its message); returns it, for the ICMP hint."""
    with pytest.raises(MalformedPacket) as exc:
        fn(*args, **kwargs)
    assert exc.value.reason is reason
    assert exc.value.layer == layer
    return exc.value


def ip_payload(pkt: Packet) -> bytes:
    """What follows the IPv4 header (options included) or the fixed IPv6
    header of a scapy-built packet, checksummed over the real pseudo-header."""
    raw = bytes(pkt)
    if raw[0] >> 4 == 6:
        return raw[40:]
    return raw[(raw[0] & 0x0F) * 4 :]


def behind_ip(data: bytes, src: str, dst: str, proto: int, **fields: Any) -> Packet:
    """Our upper-layer ``data`` behind a scapy-built IPv6 (``src`` with a
    colon) or IPv4 header, dissected by scapy as if it came off the wire."""
    if ":" in src:
        return IPv6(bytes(IPv6(src=src, dst=dst, nh=proto, plen=len(data), **fields)) + data)
    header = IP(src=src, dst=dst, proto=proto, **fields)
    header.len = len(header) + len(data)
    return IP(bytes(header) + data)


def scapy_checksum(pkt: Packet, layer: type[Packet]) -> int:
    """The checksum scapy computes for ``layer`` of ``pkt`` when the field is
    cleared: compare it with what we wrote."""
    name = "cksum" if any(f.name == "cksum" for f in layer.fields_desc) else "chksum"
    rebuilt = pkt.copy()
    delattr(rebuilt[layer], name)
    return int(pkt.__class__(bytes(rebuilt))[layer].getfieldval(name))


def dissect_icmpv6(data: bytes, src: str, dst: str, hlim: int = 64) -> Packet:
    """Our ICMPv6 message behind a scapy IPv6 header, dissected by scapy,
    which must compute the checksum we wrote."""
    pkt = behind_ip(data, src, dst, 58, hlim=hlim)
    layer = type(pkt.payload)
    assert pkt[layer].cksum == scapy_checksum(pkt, layer)
    return pkt
