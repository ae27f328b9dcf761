"""UDP header (RFC 768).

The checksum is verified when the caller passes the pseudo-header sum and
skipped when it passes ``None`` (the link said the checksum is valid). A zero
checksum over IPv4 means "not computed" (RFC 768); over IPv6 it is invalid
(RFC 8200 §8.1) and the IPv6 caller rejects it with ``require_checksum``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import checksum as csum
from .errors import Drop, MalformedPacket

UDP_HEADER_LEN = 8
_UDP = struct.Struct("!HHHH")


class UdpView:
    """Zero-copy view of a UDP datagram (header and payload)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        require_checksum: bool = False,
    ) -> UdpView:
        """Validate ``buf`` (the IP payload). ``pseudo`` is the pseudo-header
        sum to verify against, or None to skip verification."""
        buf = memoryview(buf)
        if len(buf) < UDP_HEADER_LEN:
            raise MalformedPacket(Drop.UDP_TRUNCATED, f"{len(buf)} bytes", layer="udp")
        length = (buf[4] << 8) | buf[5]
        if length < UDP_HEADER_LEN or length > len(buf):
            raise MalformedPacket(
                Drop.UDP_BAD_LENGTH, f"length {length}, {len(buf)} bytes", layer="udp"
            )
        field = (buf[6] << 8) | buf[7]
        if field == 0 and require_checksum:
            raise MalformedPacket(Drop.UDP_BAD_CHECKSUM, "zero checksum", layer="udp")
        if pseudo is not None and field != 0 and not csum.verify(buf[:length], pseudo):
            raise MalformedPacket(Drop.UDP_BAD_CHECKSUM, layer="udp")
        return cls(buf[:length])

    def fields(self) -> tuple[int, int, int, int]:
        """(src_port, dst_port, length, checksum) in one call."""
        return _UDP.unpack_from(self.buf)

    @property
    def src_port(self) -> int:
        return (self.buf[0] << 8) | self.buf[1]

    @property
    def dst_port(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def length(self) -> int:
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def checksum(self) -> int:
        return (self.buf[6] << 8) | self.buf[7]

    @property
    def payload(self) -> memoryview:
        return self.buf[UDP_HEADER_LEN:]

    def header(self) -> UdpHeader:
        return UdpHeader(*_UDP.unpack_from(self.buf))

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class UdpHeader:
    src_port: int
    dst_port: int
    length: int = UDP_HEADER_LEN  # header and payload
    checksum: int = 0

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, *, pseudo: int | None = None) -> UdpHeader:
        return UdpView.checked(buf, pseudo=pseudo).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        """Write the header at ``offset``; returns the bytes written. With
        ``pseudo``, the payload must already follow the header in ``buf``:
        the checksum is computed over header and payload and stored in
        ``self.checksum`` too (0 is sent as 0xFFFF, RFC 768)."""
        if pseudo is not None:
            _UDP.pack_into(buf, offset, self.src_port, self.dst_port, self.length, 0)
            value = csum.checksum(memoryview(buf)[offset : offset + self.length], pseudo)
            self.checksum = value or 0xFFFF
        _UDP.pack_into(buf, offset, self.src_port, self.dst_port, self.length, self.checksum)
        return UDP_HEADER_LEN

    def summary(self) -> str:
        return f"UDP {self.src_port} > {self.dst_port} len={self.length - UDP_HEADER_LEN}"
