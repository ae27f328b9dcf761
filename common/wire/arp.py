"""ARP (RFC 826) for Ethernet and IPv4 only.

Only hardware type 1 (Ethernet, 6-byte addresses) with protocol type 0x0800
(IPv4, 4-byte addresses) is accepted, and only the opcodes request and reply.
Left out: RARP (RFC 903), InARP (RFC 2390), other hardware or protocol types.
Gratuitous ARP and ARP probes (RFC 5227) are ordinary requests/replies here;
telling them apart is the neighbour cache's job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..addr import format_ip, format_mac
from .errors import Drop, MalformedPacket

ARP_LEN = 28  # RFC 826 packet for Ethernet/IPv4: 8 + 2 * (6 + 4) bytes
ARP_HTYPE_ETHERNET = 1  # RFC 826 ar$hrd, IANA hardware type 1
ARP_PTYPE_IPV4 = 0x0800  # ar$pro: the EtherType of the protocol
ARP_HLEN_ETHERNET = 6  # ar$hln, bytes
ARP_PLEN_IPV4 = 4  # ar$pln, bytes
ARP_REQUEST = 1  # ar$op
ARP_REPLY = 2

# htype, ptype, hlen, plen, opcode, sender_mac, sender_ip, target_mac, target_ip
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_PREFIX = struct.Struct("!HHBBH")
_ETH_IPV4 = (ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, ARP_HLEN_ETHERNET, ARP_PLEN_IPV4)


class ArpView:
    """Zero-copy view of an Ethernet/IPv4 ARP packet (28 bytes; Ethernet
    padding after it is cut off)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(cls, buf: bytes | bytearray | memoryview) -> ArpView:
        buf = memoryview(buf)
        if len(buf) < ARP_LEN:
            raise MalformedPacket(Drop.ARP_TRUNCATED, f"{len(buf)} bytes", layer="arp")
        htype, ptype, hlen, plen, opcode = _PREFIX.unpack_from(buf)
        if (htype, ptype, hlen, plen) != _ETH_IPV4:
            raise MalformedPacket(
                Drop.ARP_UNSUPPORTED,
                f"htype {htype} ptype 0x{ptype:04x} hlen {hlen} plen {plen}",
                layer="arp",
            )
        if opcode != ARP_REQUEST and opcode != ARP_REPLY:
            raise MalformedPacket(Drop.ARP_BAD_OPCODE, f"opcode {opcode}", layer="arp")
        return cls(buf[:ARP_LEN])

    def fields(self) -> tuple[int, int, int, int, int, bytes, bytes, bytes, bytes]:
        """(htype, ptype, hlen, plen, opcode, sender_mac, sender_ip,
        target_mac, target_ip) in one call."""
        return _ARP.unpack_from(self.buf)

    @property
    def opcode(self) -> int:
        return (self.buf[6] << 8) | self.buf[7]

    @property
    def sender_mac(self) -> bytes:
        return bytes(self.buf[8:14])

    @property
    def sender_ip(self) -> bytes:
        return bytes(self.buf[14:18])

    @property
    def target_mac(self) -> bytes:
        return bytes(self.buf[18:24])

    @property
    def target_ip(self) -> bytes:
        return bytes(self.buf[24:28])

    def header(self) -> ArpHeader:
        return ArpHeader(*_ARP.unpack_from(self.buf)[4:])

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class ArpHeader:
    opcode: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> ArpHeader:
        return ArpView.checked(buf).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        _ARP.pack_into(
            buf,
            offset,
            *_ETH_IPV4,
            self.opcode,
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        )
        return ARP_LEN

    def summary(self) -> str:
        # tcpdump's wording.
        if self.opcode == ARP_REQUEST:
            return (
                f"ARP, Request who-has {format_ip(self.target_ip)} tell {format_ip(self.sender_ip)}"
            )
        if self.opcode == ARP_REPLY:
            return f"ARP, Reply {format_ip(self.sender_ip)} is-at {format_mac(self.sender_mac)}"
        return f"ARP, opcode {self.opcode}"
