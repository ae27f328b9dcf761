"""ICMPv4 messages (RFC 792), with the Fragmentation Needed MTU of RFC 1191
and the error size rule of RFC 1812 §4.3.2.3.

Every message parses as type, code, checksum, the 4-byte "rest of header"
and a payload; accessors give the rest of header its per-type meaning (echo
identifier and sequence number, next-hop MTU, parameter problem pointer,
redirect gateway). Error messages (types 3, 4, 5, 11, 12) expose the quoted
original datagram, and ``quoted_flow`` finds the flow it belongs to.

Left out: RFC 4884 multi-part extensions (the quote is everything after the
header, extensions included), timestamp/information/address-mask semantics
(they parse generically), and the rules about *when* to send or accept an
error (RFC 1122 §3.2.2: unknown types, errors about errors, broadcasts, rate
limits) — the network layer applies them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import checksum as csum
from ..addr import format_ip
from .errors import Drop, MalformedPacket
from .ipv4 import IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN

ICMPV4_HEADER_LEN = 8  # type, code, checksum, rest of header (RFC 792)

# Types (RFC 792, IANA "ICMP Type Numbers").
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4  # deprecated by RFC 6633, still an error type
ICMP_REDIRECT = 5
ICMP_REDIR_HOSTTOS = 3  # RFC 792: Redirect codes run 0 (network) to 3 (host and TOS)
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAM_PROBLEM = 12
ICMP_TIMESTAMP = 13
ICMP_TIMESTAMP_REPLY = 14

ICMP_ERROR_TYPES = frozenset(
    (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAM_PROBLEM)
)

# Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1).
ICMP_NET_UNREACH = 0
ICMP_HOST_UNREACH = 1
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4  # with the next-hop MTU, RFC 1191 §4
ICMP_SR_FAILED = 5
ICMP_NET_UNKNOWN = 6
ICMP_HOST_UNKNOWN = 7
ICMP_NET_ADMIN_PROHIBITED = 9
ICMP_HOST_ADMIN_PROHIBITED = 10
ICMP_ADMIN_PROHIBITED = 13  # RFC 1812 §5.2.7.1

# Time Exceeded codes (RFC 792).
ICMP_EXC_TTL = 0  # time to live exceeded in transit
ICMP_EXC_FRAGTIME = 1  # fragment reassembly time exceeded

# Parameter Problem codes (RFC 792, RFC 1108).
ICMP_PARAM_POINTER = 0  # the pointer indicates the error
ICMP_PARAM_MISSING_OPTION = 1
ICMP_PARAM_BAD_LENGTH = 2

ICMP_ERROR_MAX_LEN = 576 - IPV4_HEADER_LEN  # bytes of ICMP message, RFC 1812 §4.3.2.3
ICMP_QUOTE_MIN_DATA = 8  # bytes of data after the quoted IP header, RFC 792

_ICMP = struct.Struct("!BBHI")

_NAMES = {
    ICMP_ECHO_REPLY: "echo reply",
    ICMP_DEST_UNREACH: "dest unreachable",
    ICMP_SOURCE_QUENCH: "source quench",
    ICMP_REDIRECT: "redirect",
    ICMP_ECHO_REQUEST: "echo request",
    ICMP_TIME_EXCEEDED: "time exceeded",
    ICMP_PARAM_PROBLEM: "parameter problem",
    ICMP_TIMESTAMP: "timestamp request",
    ICMP_TIMESTAMP_REPLY: "timestamp reply",
}
_UNREACH_NAMES = {
    ICMP_NET_UNREACH: "net unreachable",
    ICMP_HOST_UNREACH: "host unreachable",
    ICMP_PROT_UNREACH: "protocol unreachable",
    ICMP_PORT_UNREACH: "port unreachable",
    ICMP_FRAG_NEEDED: "frag needed",
    ICMP_ADMIN_PROHIBITED: "admin prohibited",
}


class Icmpv4View:
    """Zero-copy view of an ICMPv4 message (the whole IP payload)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> Icmpv4View:
        """Validate ``buf`` (the IPv4 payload, already trimmed to the total
        length). The checksum covers the whole message (RFC 792)."""
        buf = memoryview(buf)
        if len(buf) < ICMPV4_HEADER_LEN:
            raise MalformedPacket(Drop.ICMPV4_TRUNCATED, f"{len(buf)} bytes", layer="icmpv4")
        if verify_checksum and not csum.verify(buf):
            raise MalformedPacket(Drop.ICMPV4_BAD_CHECKSUM, layer="icmpv4")
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
        """The 32-bit "rest of header" word, whatever the type."""
        return int.from_bytes(self.buf[4:8], "big")

    @property
    def ident(self) -> int:
        """Echo identifier (RFC 792; meaningful for types 0, 8, 13, 14)."""
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def seq(self) -> int:
        """Echo sequence number (RFC 792; meaningful for types 0, 8, 13, 14)."""
        return (self.buf[6] << 8) | self.buf[7]

    @property
    def next_hop_mtu(self) -> int:
        """Next-hop MTU of a Fragmentation Needed message (RFC 1191 §4); 0
        from routers that predate RFC 1191."""
        return (self.buf[6] << 8) | self.buf[7]

    @property
    def pointer(self) -> int:
        """Parameter Problem pointer: the offending octet of the quoted header."""
        return self.buf[4]

    @property
    def gateway(self) -> bytes:
        """Redirect gateway address (RFC 792)."""
        return bytes(self.buf[4:8])

    @property
    def is_error(self) -> bool:
        return self.buf[0] in ICMP_ERROR_TYPES

    @property
    def payload(self) -> memoryview:
        """Everything after the 8-byte header (echo data, the quote, ...)."""
        return self.buf[ICMPV4_HEADER_LEN:]

    @property
    def data(self) -> memoryview:
        """Echo data (the same bytes as ``payload``)."""
        return self.buf[ICMPV4_HEADER_LEN:]

    @property
    def quoted(self) -> memoryview:
        """The offending datagram (IP header and leading data) quoted by an
        error message; empty for other types."""
        if self.buf[0] in ICMP_ERROR_TYPES:
            return self.buf[ICMPV4_HEADER_LEN:]
        return self.buf[ICMPV4_HEADER_LEN:ICMPV4_HEADER_LEN]

    def header(self) -> Icmpv4Header:
        return Icmpv4Header(*_ICMP.unpack_from(self.buf))

    def summary(self) -> str:
        text = f"{self.header().summary()} len {len(self.buf) - ICMPV4_HEADER_LEN}"
        if self.is_error:
            flow = quoted_flow(self.buf[ICMPV4_HEADER_LEN:])
            if flow is not None:
                proto, src, dst, sport, dport = flow
                text += f" for {format_ip(src)}:{sport} > {format_ip(dst)}:{dport} proto {proto}"
        return text


@dataclass(slots=True)
class Icmpv4Header:
    type: int
    code: int
    checksum: int = 0
    rest: int = 0  # the 32-bit rest of header, see the properties below

    @classmethod
    def echo_request(cls, ident: int, seq: int) -> Icmpv4Header:
        return cls(ICMP_ECHO_REQUEST, 0, 0, (ident << 16) | seq)

    @classmethod
    def echo_reply(cls, ident: int, seq: int) -> Icmpv4Header:
        return cls(ICMP_ECHO_REPLY, 0, 0, (ident << 16) | seq)

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def next_hop_mtu(self) -> int:
        return self.rest & 0xFFFF

    @property
    def pointer(self) -> int:
        return self.rest >> 24

    @property
    def is_error(self) -> bool:
        return self.type in ICMP_ERROR_TYPES

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> Icmpv4Header:
        return Icmpv4View.checked(buf, verify_checksum=verify_checksum).header()

    def emit(
        self,
        buf: bytearray | memoryview,
        offset: int = 0,
        *,
        length: int | None = None,
        compute_checksum: bool = True,
    ) -> int:
        """Write the header at ``offset``; returns the bytes written (8). With
        ``compute_checksum`` the payload must already follow the header in
        ``buf``: the checksum covers ``length`` bytes from ``offset`` (header
        and payload; None means to the end of ``buf``) and is stored in
        ``self.checksum`` too."""
        if compute_checksum:
            _ICMP.pack_into(buf, offset, self.type, self.code, 0, self.rest)
            end = len(buf) if length is None else offset + length
            self.checksum = csum.checksum(memoryview(buf)[offset:end])
        _ICMP.pack_into(buf, offset, self.type, self.code, self.checksum, self.rest)
        return ICMPV4_HEADER_LEN

    def summary(self) -> str:
        name = _NAMES.get(self.type, f"type {self.type}")
        if self.type in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
            return f"ICMP {name} id {self.ident} seq {self.seq}"
        if self.type == ICMP_DEST_UNREACH:
            text = f"ICMP {name} {_UNREACH_NAMES.get(self.code, f'code {self.code}')}"
            if self.code == ICMP_FRAG_NEEDED:
                text += f" mtu {self.next_hop_mtu}"
            return text
        if self.type == ICMP_PARAM_PROBLEM:
            return f"ICMP {name} code {self.code} pointer {self.pointer}"
        if self.type == ICMP_REDIRECT:
            gw = format_ip(self.rest.to_bytes(4, "big"))
            return f"ICMP {name} code {self.code} to {gw}"
        return f"ICMP {name} code {self.code}"


def build_icmpv4_error(
    type_: int,
    code: int,
    offending: bytes | bytearray | memoryview,
    *,
    rest: int = 0,
    max_len: int = ICMP_ERROR_MAX_LEN,
) -> bytes:
    """The ICMP error message (header and quote, checksum filled in) about
    ``offending``, the IPv4 datagram as received (link padding after its
    total length is not quoted).

    ``rest`` is the rest-of-header word: the next-hop MTU for Fragmentation
    Needed (RFC 1191 §4), ``pointer << 24`` for Parameter Problem. The quote
    is as much of the datagram as keeps the message within ``max_len`` bytes
    (RFC 1812 §4.3.2.3: the whole error datagram within 576 bytes), but never
    less than its IP header and 8 data bytes (RFC 792), when it has them."""
    offending = memoryview(offending)
    n = len(offending)
    hl = IPV4_HEADER_LEN
    if n >= IPV4_HEADER_LEN:
        hl = max((offending[0] & 0x0F) * 4, IPV4_HEADER_LEN)
        total = (offending[2] << 8) | offending[3]
        if hl <= total < n:
            n = total  # cut link padding
    quote = min(n, max(max_len - ICMPV4_HEADER_LEN, hl + ICMP_QUOTE_MIN_DATA))
    buf = bytearray(ICMPV4_HEADER_LEN + quote)
    buf[ICMPV4_HEADER_LEN:] = offending[:quote]
    Icmpv4Header(type_, code, 0, rest).emit(buf)
    return bytes(buf)


def quoted_flow(
    quoted: bytes | bytearray | memoryview,
) -> tuple[int, bytes, bytes, int, int] | None:
    """(protocol, src, dst, src_port, dst_port) of the datagram an ICMP error
    quotes, as the sender of that datagram sees it (src is us).

    Ports come from the first 4 bytes after the quoted IP header for TCP and
    UDP and are 0 for other protocols. None when the quote does not hold a
    whole IPv4 header, or holds a TCP/UDP datagram without its ports (too
    short, or a non-first fragment). Never raises."""
    try:
        q = memoryview(quoted)
        n = len(q)
        if n < IPV4_HEADER_LEN or q[0] >> 4 != 4:
            return None
        hl = (q[0] & 0x0F) * 4
        if hl < IPV4_HEADER_LEN or hl > n:
            return None
        proto = q[9]
        src = bytes(q[12:16])
        dst = bytes(q[16:20])
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return (proto, src, dst, 0, 0)
        if (q[6] & 0x1F) or q[7] or n < hl + 4:
            return None  # no transport header in the quote
        return (
            proto,
            src,
            dst,
            (q[hl] << 8) | q[hl + 1],
            (q[hl + 2] << 8) | q[hl + 3],
        )
    except (TypeError, ValueError, IndexError, NotImplementedError):  # not a byte buffer
        return None
