"""IPv4 header (RFC 791, with the host requirements of RFC 1122 §3.2.1).

``Ipv4View.checked`` validates version, IHL, total length, the header
checksum, the option list's framing and the fragment bounds, and cuts
link-layer padding beyond the total length off the view. Options are walked
only to make sure they are well formed (RFC 791 §3.1 option format); none is
acted on: source routing, record route and timestamps are ignored, as
RFC 7126 recommends for hosts. Left out: reassembly (the network layer's job),
the reserved flag bit (read as zero, never set), address checks (martians,
broadcast, multicast: the network layer).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .. import checksum as csum
from ..addr import format_ip
from .errors import Drop, IcmpHint, IcmpHintKind, MalformedPacket

IPV4_HEADER_LEN = 20  # bytes, without options (RFC 791 §3.1, IHL 5)
IPV4_MAX_HEADER_LEN = 60  # bytes, IHL 15
IPV4_MAX_PACKET = 65535  # bytes, the 16-bit total length
IPV4_VERSION = 4

# Protocol numbers (IANA "Assigned Internet Protocol Numbers").
IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# Option types (RFC 791 §3.1): the two single-byte options; every other
# option is type, length (counting both bytes) and data.
IPOPT_EOL = 0  # end of option list
IPOPT_NOP = 1  # no operation
IPOPT_ROUTER_ALERT = 0x94  # RFC 2113: copied, class 0, number 20; 4 bytes


def iter_options(options: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each option of a list ``Ipv4View.checked``
    accepted (``Ipv4View.options``), NOPs skipped, up to End of Option List."""
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == IPOPT_EOL:
            return
        if kind == IPOPT_NOP:
            i += 1
            continue
        end = i + options[i + 1]
        yield kind, i, end
        i = end


# Flags (RFC 791 §3.1), in the 16-bit flags/fragment-offset word.
_FLAG_DF = 0x4000
_FLAG_MF = 0x2000
_OFFSET_MASK = 0x1FFF  # in units of 8 bytes

# version/ihl, tos, total_length, ident, flags/frag_offset, ttl, protocol, checksum, src, dst
_IPV4 = struct.Struct("!BBHHHBBH4s4s")


def _param_problem(pointer: int) -> IcmpHint:
    # RFC 1122 §3.2.2.5 / RFC 792: Parameter Problem, code 0, pointer to the
    # offending octet of the header.
    return IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, 0, pointer)


class Ipv4View:
    """Zero-copy view of an IPv4 datagram, trimmed to its total length."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> Ipv4View:
        """Validate ``buf`` (the link payload, possibly padded). With
        ``verify_checksum=False`` the header checksum is not checked (the link
        said it is valid)."""
        buf = memoryview(buf)
        n = len(buf)
        if n < IPV4_HEADER_LEN:
            raise MalformedPacket(Drop.IPV4_TRUNCATED, f"{n} bytes", layer="ipv4")
        version = buf[0] >> 4
        if version != IPV4_VERSION:
            raise MalformedPacket(Drop.IPV4_BAD_VERSION, f"version {version}", layer="ipv4")
        hl = (buf[0] & 0x0F) * 4
        if hl < IPV4_HEADER_LEN:
            raise MalformedPacket(Drop.IPV4_BAD_IHL, f"ihl {hl // 4}", layer="ipv4")
        if hl > n:
            raise MalformedPacket(Drop.IPV4_TRUNCATED, f"ihl {hl // 4}, {n} bytes", layer="ipv4")
        total = (buf[2] << 8) | buf[3]
        if total < hl or total > n:
            # RFC 1122 §3.2.1.1 (implied): the datagram must hold its header
            # and fit in what the link delivered.
            raise MalformedPacket(
                Drop.IPV4_BAD_TOTAL_LENGTH,
                f"total length {total}, ihl {hl // 4}, {n} bytes",
                layer="ipv4",
            )
        # RFC 1122 §3.2.1.2: MUST silently discard on a bad checksum.
        if verify_checksum and not csum.verify(buf[:hl]):
            raise MalformedPacket(Drop.IPV4_BAD_CHECKSUM, layer="ipv4")
        i = IPV4_HEADER_LEN
        while i < hl:
            kind = buf[i]
            if kind == IPOPT_EOL:
                break  # the rest of the header is padding
            if kind == IPOPT_NOP:
                i += 1
                continue
            if i + 1 >= hl:
                raise MalformedPacket(
                    Drop.IPV4_BAD_OPTIONS,
                    f"option {kind} without length",
                    layer="ipv4",
                    icmp=_param_problem(i),
                )
            olen = buf[i + 1]
            if olen < 2 or i + olen > hl:
                raise MalformedPacket(
                    Drop.IPV4_BAD_OPTIONS,
                    f"option {kind} length {olen} at {i}",
                    layer="ipv4",
                    icmp=_param_problem(i + 1),
                )
            i += olen
        word = (buf[6] << 8) | buf[7]
        if word & (_FLAG_MF | _OFFSET_MASK):
            # A fragment may not reach beyond the largest datagram (the
            # "ping of death": offset + length > 65535).
            end = (word & _OFFSET_MASK) * 8 + total - hl
            if end > IPV4_MAX_PACKET:
                raise MalformedPacket(
                    Drop.IPV4_BAD_FRAGMENT, f"fragment ends at {end}", layer="ipv4"
                )
        return cls(buf[:total])

    def fields(self) -> tuple[int, int, int, int, int, int, int, int, bytes, bytes]:
        """(version_ihl, tos, total_length, ident, flags_frag, ttl, protocol,
        checksum, src, dst), the raw fixed header, in one call."""
        return _IPV4.unpack_from(self.buf)

    @property
    def header_len(self) -> int:
        """Bytes, options included (IHL * 4)."""
        return (self.buf[0] & 0x0F) * 4

    @property
    def tos(self) -> int:
        return self.buf[1]

    @property
    def dscp(self) -> int:
        """Differentiated services code point (RFC 2474 §3), the upper 6 bits of TOS."""
        return self.buf[1] >> 2

    @property
    def ecn(self) -> int:
        """Explicit congestion notification (RFC 3168 §5), the lower 2 bits of TOS."""
        return self.buf[1] & 0x03

    @property
    def total_length(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def ident(self) -> int:
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def df(self) -> bool:
        return bool(self.buf[6] & 0x40)

    @property
    def mf(self) -> bool:
        return bool(self.buf[6] & 0x20)

    @property
    def frag_offset(self) -> int:
        """Fragment offset in BYTES (the wire field times 8)."""
        return (((self.buf[6] << 8) | self.buf[7]) & _OFFSET_MASK) * 8

    @property
    def is_fragment(self) -> bool:
        """True for any fragment, first (MF) to last (offset != 0)."""
        return bool(((self.buf[6] << 8) | self.buf[7]) & (_FLAG_MF | _OFFSET_MASK))

    @property
    def ttl(self) -> int:
        return self.buf[8]

    @property
    def protocol(self) -> int:
        return self.buf[9]

    @property
    def checksum(self) -> int:
        return (self.buf[10] << 8) | self.buf[11]

    @property
    def src(self) -> bytes:
        return bytes(self.buf[12:16])

    @property
    def dst(self) -> bytes:
        return bytes(self.buf[16:20])

    @property
    def options(self) -> memoryview:
        """The option bytes, padding included (empty without options)."""
        return self.buf[IPV4_HEADER_LEN : self.header_len]

    @property
    def payload(self) -> memoryview:
        return self.buf[self.header_len :]

    def header(self) -> Ipv4Header:
        vihl, tos, total, ident, word, ttl, proto, check, src, dst = _IPV4.unpack_from(self.buf)
        return Ipv4Header(
            src,
            dst,
            proto,
            ttl,
            tos,
            ident,
            bool(word & _FLAG_DF),
            bool(word & _FLAG_MF),
            (word & _OFFSET_MASK) * 8,
            total,
            check,
            bytes(self.buf[IPV4_HEADER_LEN : (vihl & 0x0F) * 4]),
        )

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class Ipv4Header:
    src: bytes
    dst: bytes
    protocol: int
    ttl: int = 64  # RFC 1700 / Linux default
    tos: int = 0
    ident: int = 0
    df: bool = False
    mf: bool = False
    frag_offset: int = 0  # bytes, a multiple of 8 (the wire field is in 8-byte units)
    total_length: int = 0  # header and payload, bytes: set it before emit()
    checksum: int = 0
    options: bytes = b""  # raw option bytes; emit() pads them to 4 bytes with EOL

    @property
    def header_len(self) -> int:
        """Bytes emit() writes: 20 plus the options padded to a multiple of 4."""
        return IPV4_HEADER_LEN + ((len(self.options) + 3) & ~3)

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> Ipv4Header:
        return Ipv4View.checked(buf, verify_checksum=verify_checksum).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, compute_checksum: bool = True
    ) -> int:
        """Write the header (options included) at ``offset``; returns the bytes
        written. With ``compute_checksum`` the header checksum is computed and
        stored in ``self.checksum`` too. Options longer than 40 bytes raise
        ValueError (API misuse)."""
        hl = self.header_len
        if hl > IPV4_MAX_HEADER_LEN:
            raise ValueError(f"IPv4 options too long: {len(self.options)} bytes")
        word = (
            (_FLAG_DF if self.df else 0)
            | (_FLAG_MF if self.mf else 0)
            | ((self.frag_offset >> 3) & _OFFSET_MASK)
        )
        args = (
            (IPV4_VERSION << 4) | (hl >> 2),
            self.tos,
            self.total_length,
            self.ident,
            word,
            self.ttl,
            self.protocol,
        )
        if hl > IPV4_HEADER_LEN:
            end = offset + IPV4_HEADER_LEN + len(self.options)
            buf[offset + IPV4_HEADER_LEN : end] = self.options
            buf[end : offset + hl] = bytes(offset + hl - end)  # EOL padding
        if compute_checksum:
            _IPV4.pack_into(buf, offset, *args, 0, self.src, self.dst)
            self.checksum = csum.checksum(memoryview(buf)[offset : offset + hl])
        _IPV4.pack_into(buf, offset, *args, self.checksum, self.src, self.dst)
        return hl

    def summary(self) -> str:
        extra = ""
        if self.tos:
            extra += f" tos 0x{self.tos:02x}"
        if self.df:
            extra += " DF"
        if self.mf or self.frag_offset:
            extra += f" frag {self.frag_offset}{'+' if self.mf else ''}"
        if self.options:
            extra += f" optlen {len(self.options)}"
        return (
            f"IP {format_ip(self.src)} > {format_ip(self.dst)} ttl {self.ttl} id {self.ident}"
            f" len {self.total_length} proto {self.protocol}{extra}"
        )
