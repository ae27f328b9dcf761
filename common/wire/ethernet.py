"""Ethernet II frames (IEEE 802.3 type field) with one optional 802.1Q tag.

802.3 length-field frames (type < 0x0600) parse, and carry their length as
``ethertype``: the classifier treats them as unknown and hands them to shard 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..addr import format_mac
from .errors import Drop, MalformedPacket

ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4
ETH_MIN_FRAME = 60  # without FCS
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD

_ETH = struct.Struct("!6s6sH")
_VLAN = struct.Struct("!HH")


class EthernetView:
    """Zero-copy view of an Ethernet frame."""

    __slots__ = ("buf", "header_len")

    def __init__(self, buf: memoryview, header_len: int = ETH_HEADER_LEN) -> None:
        self.buf = buf
        self.header_len = header_len  # 14, or 18 with an 802.1Q tag

    @classmethod
    def checked(cls, buf: bytes | bytearray | memoryview) -> EthernetView:
        buf = memoryview(buf)
        if len(buf) < ETH_HEADER_LEN:
            raise MalformedPacket(Drop.ETH_TRUNCATED, f"{len(buf)} bytes", layer="eth")
        if (buf[12] << 8) | buf[13] == ETHERTYPE_VLAN:
            if len(buf) < ETH_HEADER_LEN + VLAN_TAG_LEN:
                raise MalformedPacket(Drop.VLAN_TRUNCATED, f"{len(buf)} bytes", layer="eth")
            return cls(buf, ETH_HEADER_LEN + VLAN_TAG_LEN)
        return cls(buf)

    @property
    def dst(self) -> bytes:
        return bytes(self.buf[0:6])

    @property
    def src(self) -> bytes:
        return bytes(self.buf[6:12])

    @property
    def ethertype(self) -> int:
        """The type of the payload (the inner type of a tagged frame)."""
        i = self.header_len - 2
        return (self.buf[i] << 8) | self.buf[i + 1]

    @property
    def vlan(self) -> int | None:
        """The 12-bit VLAN id of a tagged frame, else None."""
        if self.header_len == ETH_HEADER_LEN:
            return None
        return ((self.buf[14] << 8) | self.buf[15]) & 0x0FFF

    @property
    def payload(self) -> memoryview:
        return self.buf[self.header_len :]

    def header(self) -> EthernetHeader:
        dst, src, ethertype = _ETH.unpack_from(self.buf)
        if self.header_len == ETH_HEADER_LEN:
            return EthernetHeader(dst, src, ethertype)
        tci, inner = _VLAN.unpack_from(self.buf, ETH_HEADER_LEN)
        return EthernetHeader(dst, src, inner, vlan=tci & 0x0FFF, pcp=tci >> 13)

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class EthernetHeader:
    dst: bytes
    src: bytes
    ethertype: int
    vlan: int | None = None  # 802.1Q VLAN id, None for an untagged frame
    pcp: int = 0  # 802.1Q priority code point

    @property
    def header_len(self) -> int:
        return ETH_HEADER_LEN if self.vlan is None else ETH_HEADER_LEN + VLAN_TAG_LEN

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> EthernetHeader:
        return EthernetView.checked(buf).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        if self.vlan is None:
            _ETH.pack_into(buf, offset, self.dst, self.src, self.ethertype)
            return ETH_HEADER_LEN
        _ETH.pack_into(buf, offset, self.dst, self.src, ETHERTYPE_VLAN)
        _VLAN.pack_into(buf, offset + ETH_HEADER_LEN, (self.pcp << 13) | self.vlan, self.ethertype)
        return ETH_HEADER_LEN + VLAN_TAG_LEN

    def summary(self) -> str:
        tag = "" if self.vlan is None else f" vlan {self.vlan}"
        return f"{format_mac(self.src)} > {format_mac(self.dst)}{tag} type 0x{self.ethertype:04x}"
