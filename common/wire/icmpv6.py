"""ICMPv6 messages (RFC 4443).

Implemented: the common header and checksum (§2.1, §2.3, with the IPv6
pseudo-header of RFC 8200 §8.1 whose length is the ICMPv6 message length);
Destination Unreachable (§3.1), Packet Too Big (§3.2), Time Exceeded (§3.3),
Parameter Problem (§3.4), Echo Request/Reply (§4.1, §4.2); building errors that
quote as much of the offending packet as fits in the minimum MTU (§2.4 (c));
the flow of the packet quoted by an error (§2.4 (d)).

Every other type parses generically (type, code, checksum, the 4-byte "rest"
word, body): NDP (133-137) and MLD (130-132, 143) are decoded by ndp.py and
mld.py, which take their type numbers and their checksum emission
(``set_checksum``, ``message_bytes``) from here. Left out here, for the caller: the rules of
§2.4 on when to send or drop (no error about an error, none to multicast except
§2.4 (e.2)/(e.3), rate limiting §2.4 (f)) and discarding unknown informational
types (§2.4 (b)). Codes outside those RFC 4443 defines are not refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from .. import checksum as csum
from .errors import Drop, MalformedPacket
from .ipv6 import (
    IPV6_FRAGMENT_HEADER_LEN,
    IPV6_HEADER_LEN,
    IPV6_MAX_EXTENSIONS,
    IPV6_MIN_MTU,
    NH_AH,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ICMPV6,
    NH_ROUTING,
    NH_TCP,
    NH_UDP,
)

ICMPV6_HEADER_LEN = 8  # type, code, checksum and the 4-byte type-specific word
# RFC 4443 §2.4 (c): the whole error packet stays within the minimum MTU.
ICMPV6_MAX_QUOTE = IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN  # 1232 bytes

# Types (RFC 4443 §2.1; NDP RFC 4861 §4; MLD RFC 2710, RFC 3810).
ICMPV6_DST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAM_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ICMPV6_MLD_QUERY = 130
ICMPV6_MLD_REPORT = 131
ICMPV6_MLD_DONE = 132
ICMPV6_ROUTER_SOLICIT = 133
ICMPV6_ROUTER_ADVERT = 134
ICMPV6_NEIGHBOR_SOLICIT = 135
ICMPV6_NEIGHBOR_ADVERT = 136
ICMPV6_REDIRECT = 137
ICMPV6_MLD2_REPORT = 143

# Destination Unreachable codes (RFC 4443 §3.1).
UNREACH_NO_ROUTE = 0
UNREACH_ADMIN_PROHIBITED = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDRESS = 3
UNREACH_PORT = 4
UNREACH_SOURCE_POLICY = 5
UNREACH_REJECT_ROUTE = 6
# Time Exceeded codes (RFC 4443 §3.3).
TIME_EXCEEDED_HOP_LIMIT = 0
TIME_EXCEEDED_REASSEMBLY = 1
# Parameter Problem codes (RFC 4443 §3.4).
PARAM_ERRONEOUS_FIELD = 0
PARAM_UNRECOGNIZED_NEXT_HEADER = 1
PARAM_UNRECOGNIZED_OPTION = 2

_ICMP = struct.Struct("!BBHI")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")

_TYPE_NAMES = {
    ICMPV6_DST_UNREACH: "destination unreachable",
    ICMPV6_PACKET_TOO_BIG: "packet too big",
    ICMPV6_TIME_EXCEEDED: "time exceeded",
    ICMPV6_PARAM_PROBLEM: "parameter problem",
    ICMPV6_ECHO_REQUEST: "echo request",
    ICMPV6_ECHO_REPLY: "echo reply",
    ICMPV6_MLD_QUERY: "multicast listener query",
    ICMPV6_MLD_REPORT: "multicast listener report",
    ICMPV6_MLD_DONE: "multicast listener done",
    ICMPV6_ROUTER_SOLICIT: "router solicitation",
    ICMPV6_ROUTER_ADVERT: "router advertisement",
    ICMPV6_NEIGHBOR_SOLICIT: "neighbor solicitation",
    ICMPV6_NEIGHBOR_ADVERT: "neighbor advertisement",
    ICMPV6_REDIRECT: "redirect",
    ICMPV6_MLD2_REPORT: "multicast listener report v2",
}


def icmpv6_pseudo(src: bytes, dst: bytes, length: int) -> int:
    """The pseudo-header sum for an ICMPv6 message of ``length`` bytes."""
    return csum.pseudo_header_v6(src, dst, NH_ICMPV6, length)


def set_checksum(buf: bytearray | memoryview, offset: int, length: int, pseudo: int) -> int:
    """Compute the checksum of the ``length``-byte ICMPv6 message at
    ``offset`` (its checksum field already zero) with the pseudo-header sum
    ``pseudo``, store it in the field (RFC 4443 §2.3) and return it. Every
    ICMPv6 emitter (this module, ndp.py, mld.py) goes through here."""
    value = csum.checksum(memoryview(buf)[offset : offset + length], pseudo)
    _U16.pack_into(buf, offset + 2, value)
    return value


class Icmpv6Message(Protocol):
    """What ``message_bytes`` needs: an NDP or MLD message dataclass."""

    @property
    def length(self) -> int: ...

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int: ...


def message_bytes(msg: Icmpv6Message, src: bytes | None = None, dst: bytes | None = None) -> bytes:
    """``msg`` emitted into new bytes; with the IPv6 ``src`` and ``dst``,
    checksummed (the ``to_bytes`` of the NDP and MLD messages)."""
    buf = bytearray(msg.length)
    pseudo = None if src is None or dst is None else icmpv6_pseudo(src, dst, len(buf))
    msg.emit(buf, pseudo=pseudo)
    return bytes(buf)


class Icmpv6View:
    """Zero-copy view of an ICMPv6 message (the whole upper-layer payload)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, pseudo: int | None = None
    ) -> Icmpv6View:
        """Validate ``buf``; ``pseudo`` is the pseudo-header sum for
        ``len(buf)`` (see ``icmpv6_pseudo``), or None to skip verification
        (the link said the checksum is valid)."""
        buf = memoryview(buf)
        if len(buf) < ICMPV6_HEADER_LEN:
            raise MalformedPacket(Drop.ICMPV6_TRUNCATED, f"{len(buf)} bytes", layer="icmpv6")
        # RFC 4443 §2.3: there is no "no checksum" value in ICMPv6.
        if pseudo is not None and not csum.verify(buf, pseudo):
            raise MalformedPacket(Drop.ICMPV6_BAD_CHECKSUM, layer="icmpv6")
        return cls(buf)

    def fields(self) -> tuple[int, int, int, int]:
        """(type, code, checksum, rest) in one call."""
        return _ICMP.unpack_from(self.buf)

    @property
    def type(self) -> int:
        return self.buf[0]

    @property
    def code(self) -> int:
        return self.buf[1]

    @property
    def checksum(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def rest(self) -> int:
        """The 32-bit type-specific word after the checksum."""
        return _ICMP.unpack_from(self.buf)[3]

    @property
    def body(self) -> memoryview:
        return self.buf[ICMPV6_HEADER_LEN:]

    @property
    def is_error(self) -> bool:
        """RFC 4443 §2.1: types 0-127 are errors."""
        return self.buf[0] < 128

    @property
    def quoted(self) -> memoryview:
        """The start of the packet that caused an error (empty for informational messages)."""
        return self.buf[ICMPV6_HEADER_LEN:] if self.buf[0] < 128 else self.buf[0:0]

    @property
    def mtu(self) -> int:
        """Packet Too Big (RFC 4443 §3.2)."""
        return self.rest

    @property
    def pointer(self) -> int:
        """Parameter Problem (RFC 4443 §3.4): offset into the quoted packet."""
        return self.rest

    @property
    def ident(self) -> int:
        """Echo (RFC 4443 §4.1)."""
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def seq(self) -> int:
        """Echo (RFC 4443 §4.1)."""
        return (self.buf[6] << 8) | self.buf[7]

    @property
    def data(self) -> memoryview:
        """Echo data (RFC 4443 §4.1)."""
        return self.buf[ICMPV6_HEADER_LEN:]

    def header(self) -> Icmpv6Header:
        return Icmpv6Header(*_ICMP.unpack_from(self.buf))

    def summary(self) -> str:
        return f"{self.header().summary()} len {len(self.buf)}"


@dataclass(slots=True)
class Icmpv6Header:
    type: int
    code: int = 0
    checksum: int = 0
    rest: int = 0  # the 32-bit word after the checksum (mtu, pointer, ident/seq, ...)

    @classmethod
    def echo(cls, ident: int, seq: int, *, reply: bool = False) -> Icmpv6Header:
        return cls(ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST, 0, 0, (ident << 16) | seq)

    @property
    def is_error(self) -> bool:
        return self.type < 128

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, pseudo: int | None = None
    ) -> Icmpv6Header:
        return Icmpv6View.checked(buf, pseudo=pseudo).header()

    def emit(
        self,
        buf: bytearray | memoryview,
        offset: int = 0,
        *,
        pseudo: int | None = None,
        length: int | None = None,
    ) -> int:
        """Write the header at ``offset``; returns the bytes written. With
        ``pseudo``, the body must already follow the header in ``buf``: the
        checksum is computed over ``length`` bytes (default: to the end of
        ``buf``) and stored in ``self.checksum`` too."""
        if pseudo is None:
            _ICMP.pack_into(buf, offset, self.type, self.code, self.checksum, self.rest)
            return ICMPV6_HEADER_LEN
        _ICMP.pack_into(buf, offset, self.type, self.code, 0, self.rest)
        if length is None:
            length = len(buf) - offset
        self.checksum = set_checksum(buf, offset, length, pseudo)
        return ICMPV6_HEADER_LEN

    def summary(self) -> str:
        name = _TYPE_NAMES.get(self.type)
        if name is None:
            return f"ICMP6 type {self.type} code {self.code}"
        if self.type in (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY):
            return f"ICMP6 {name} id {self.ident} seq {self.seq}"
        if self.type == ICMPV6_PACKET_TOO_BIG:
            return f"ICMP6 {name} mtu {self.rest}"
        if self.type == ICMPV6_PARAM_PROBLEM:
            return f"ICMP6 {name} code {self.code} pointer {self.rest}"
        if self.code:
            return f"ICMP6 {name} code {self.code}"
        return f"ICMP6 {name}"


# --- builders ---------------------------------------------------------------


def build_icmpv6(
    type_: int,
    code: int,
    body: bytes | bytearray | memoryview = b"",
    *,
    src: bytes,
    dst: bytes,
    rest: int = 0,
) -> bytes:
    """A whole ICMPv6 message with its checksum for (src, dst)."""
    length = ICMPV6_HEADER_LEN + len(body)
    buf = bytearray(length)
    buf[ICMPV6_HEADER_LEN:] = body
    Icmpv6Header(type_, code, 0, rest).emit(buf, pseudo=icmpv6_pseudo(src, dst, length))
    return bytes(buf)


def build_icmpv6_error(
    type_: int,
    code: int,
    offending: bytes | bytearray | memoryview,
    *,
    src: bytes,
    dst: bytes,
    rest: int = 0,
) -> bytes:
    """An error message quoting as much of ``offending`` (from its IPv6 header
    on) as keeps the error packet within 1280 bytes (RFC 4443 §2.4 (c)).
    ``rest`` is the MTU (Packet Too Big) or the pointer (Parameter Problem)."""
    if type_ >= 128:
        raise ValueError(f"ICMPv6 type {type_} is not an error")
    return build_icmpv6(type_, code, offending[:ICMPV6_MAX_QUOTE], src=src, dst=dst, rest=rest)


def build_echo_request(
    ident: int, seq: int, data: bytes | bytearray | memoryview = b"", *, src: bytes, dst: bytes
) -> bytes:
    """RFC 4443 §4.1."""
    return build_icmpv6(ICMPV6_ECHO_REQUEST, 0, data, src=src, dst=dst, rest=(ident << 16) | seq)


def build_echo_reply(
    ident: int, seq: int, data: bytes | bytearray | memoryview = b"", *, src: bytes, dst: bytes
) -> bytes:
    """RFC 4443 §4.2: identifier, sequence number and data of the request."""
    return build_icmpv6(ICMPV6_ECHO_REPLY, 0, data, src=src, dst=dst, rest=(ident << 16) | seq)


# --- the packet quoted by an error ------------------------------------------


def quoted_flow(
    quoted: bytes | bytearray | memoryview,
) -> tuple[int, bytes, bytes, int, int] | None:
    """(next_header, src, dst, src_port, dst_port) of the packet quoted by an
    error (RFC 4443 §2.4 (d)), with its extension headers skipped leniently (the
    quote is usually cut short). Ports are 0 for protocols other than TCP/UDP
    and for non-first fragments. None when the quote is unusable: shorter than
    an IPv6 header, not version 6, cut inside the header chain or the ports.
    Never raises."""
    buf = memoryview(quoted)
    n = len(buf)
    if n < IPV6_HEADER_LEN or buf[0] >> 4 != 6:
        return None
    src, dst = bytes(buf[8:24]), bytes(buf[24:40])
    next_header, off = buf[6], IPV6_HEADER_LEN
    first = True
    for _ in range(IPV6_MAX_EXTENSIONS + 1):
        if next_header in (NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS):
            if off + 2 > n:
                return None
            next_header, off = buf[off], off + (buf[off + 1] + 1) * 8
        elif next_header == NH_AH:  # RFC 4302 §2.2: length in 4-byte units, minus 2
            if off + 2 > n:
                return None
            next_header, off = buf[off], off + (buf[off + 1] + 2) * 4
        elif next_header == NH_FRAGMENT:
            if off + 4 > n:
                return None
            if ((buf[off + 2] << 8) | buf[off + 3]) & 0xFFF8:
                first = False  # the rest is the middle of the upper-layer data
                next_header = buf[off]
                break
            next_header, off = buf[off], off + IPV6_FRAGMENT_HEADER_LEN
        else:
            break
    else:
        return None
    if not first or next_header not in (NH_TCP, NH_UDP):
        return next_header, src, dst, 0, 0
    if off + 4 > n:
        return None
    src_port, dst_port = _PORTS.unpack_from(buf, off)
    return next_header, src, dst, src_port, dst_port
