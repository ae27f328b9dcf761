"""IPv6 header and extension headers (RFC 8200), and IPv6 address helpers
(RFC 4291, RFC 2464).

Implemented:

* the fixed header (RFC 8200 §3): ``Ipv6View`` (read) and ``Ipv6Header`` (build);
* the extension header chain (RFC 8200 §4), walked by ``walk_extensions``:
  Hop-by-Hop Options only directly after the fixed header (§4.1), option TLVs
  and the action bits of unrecognized options (§4.2), the Routing header
  (§4.4, type 0 refused as RFC 5095 asks), the Fragment header (§4.5, atomic
  fragments as RFC 6946 asks), Destination Options (§4.6), No Next Header
  (§4.7), and a limit on the chain length (RFC 8504 §5.3 asks hosts for one);
* the Fragment header builder (``Ipv6FragmentHeader``) and the fragment size
  for output fragmentation (§4.5);
* modified EUI-64 interface identifiers (RFC 4291 §2.5.1, App. A), link-local,
  solicited-node and Ethernet multicast addresses (RFC 4291 §2.7.1, RFC 2464 §7);
  the predicates on addresses (link-local, multicast, scope, v4-mapped) are in
  ``common/addr.py``.

Left out:

* jumbograms (RFC 2675): a zero Payload Length with Hop-by-Hop Options is
  refused (``IPV6_BAD_PAYLOAD_LENGTH``) and the Jumbo option is unrecognized;
* AH and ESP (RFC 4302/4303) are not walked: like Mobility, HIP, Shim6 and any
  other value they come back as the upper-layer protocol, and the caller answers
  "unrecognized next header" when it has no handler (RFC 8200 §4);
* no Routing type is implemented (we are a host): a Routing header with
  Segments Left > 0 is refused whatever its type (§4.4);
* the walker stops at the Fragment header of a real fragment: whether the first
  fragment holds the whole header chain (RFC 7112) is for reassembly, which
  walks the reassembled packet again.

Hints: every ``IcmpHint.pointer`` is an offset from the start of the IPv6 header
(RFC 4443 §3.4). An unrecognized option whose action bits ask for an ICMP error
raises with an ``Ipv6OptionHint`` that carries the action: RFC 4443 §2.4 (e.3)
lets action 10 be answered even to a multicast destination, while action 11 is
answered only to a unicast one. The walker does not look at the destination;
the caller applies that rule (``hint.multicast_ok``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..addr import format_ip
from .errors import Drop, IcmpHint, IcmpHintKind, MalformedPacket

IPV6_HEADER_LEN = 40  # RFC 8200 §3, bytes
IPV6_VERSION = 6
IPV6_MIN_MTU = 1280  # RFC 8200 §5: every link carries 1280-byte packets
IPV6_MAX_PAYLOAD = 0xFFFF  # RFC 8200 §3: 16-bit Payload Length, bytes
IPV6_FRAGMENT_HEADER_LEN = 8  # RFC 8200 §4.5
IPV6_MAX_EXTENSIONS = 16  # local limit on the header chain (RFC 8504 §5.3 asks for one)

# Next Header values (IANA "Assigned Internet Protocol Numbers").
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60

# Option types (RFC 8200 §4.2, RFC 2711, RFC 2675).
OPT_PAD1 = 0x00
OPT_PADN = 0x01
OPT_ROUTER_ALERT = 0x05  # RFC 2711: 2-byte value, Hop-by-Hop only
OPT_JUMBO = 0xC2  # RFC 2675: not supported, so unrecognized (action 11)

# Action bits of an option type (RFC 8200 §4.2), the two high-order bits.
OPT_ACTION_SKIP = 0
OPT_ACTION_DISCARD = 1
OPT_ACTION_DISCARD_ICMP = 2
OPT_ACTION_DISCARD_ICMP_UNICAST = 3

ROUTING_TYPE0 = 0  # RFC 5095: deprecated

# ICMPv6 Parameter Problem codes (RFC 4443 §3.4), for hints.
_PP_ERRONEOUS_FIELD = 0
_PP_UNRECOGNIZED_NEXT_HEADER = 1
_PP_UNRECOGNIZED_OPTION = 2

# Pointers (offsets from the start of the IPv6 header) to fixed-header fields.
PTR_PAYLOAD_LENGTH = 4
PTR_NEXT_HEADER = 6

_IPV6 = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BBHI")
_EXTENSIONS = frozenset((NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS))

ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")  # RFC 4291 §2.7.1
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")  # RFC 4291 §2.7.1
LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")  # fe80::/64, 8 bytes
SOLICITED_NODE_PREFIX = bytes.fromhex("ff0200000000000000000001ff")  # ff02::1:ff00:0/104


def _drop(reason: Drop, detail: str = "", icmp: IcmpHint | None = None) -> MalformedPacket:
    return MalformedPacket(reason, detail, layer="ipv6", icmp=icmp)


class Ipv6View:
    """Zero-copy view of an IPv6 packet, cut to 40 + Payload Length bytes."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(cls, buf: bytes | bytearray | memoryview) -> Ipv6View:
        """Validate the fixed header; link-layer padding after the payload is
        cut. Extension headers are checked by ``walk_extensions``."""
        buf = memoryview(buf)
        n = len(buf)
        if n < IPV6_HEADER_LEN:
            raise _drop(Drop.IPV6_TRUNCATED, f"{n} bytes")
        if buf[0] >> 4 != IPV6_VERSION:
            raise _drop(Drop.IPV6_BAD_VERSION, f"version {buf[0] >> 4}")
        length = (buf[4] << 8) | buf[5]
        if length > n - IPV6_HEADER_LEN:
            raise _drop(Drop.IPV6_BAD_PAYLOAD_LENGTH, f"payload length {length}, {n} bytes")
        if length == 0 and buf[6] == NH_HOPOPTS:
            # RFC 2675 §3: a jumbogram; not supported.
            raise _drop(Drop.IPV6_BAD_PAYLOAD_LENGTH, "jumbogram")
        return cls(buf[: IPV6_HEADER_LEN + length])

    def fields(self) -> tuple[int, int, int, int, bytes, bytes]:
        """(version/traffic class/flow label word, payload_length, next_header,
        hop_limit, src, dst) in one call."""
        return _IPV6.unpack_from(self.buf)

    @property
    def version(self) -> int:
        return self.buf[0] >> 4

    @property
    def traffic_class(self) -> int:
        return ((self.buf[0] & 0x0F) << 4) | (self.buf[1] >> 4)

    @property
    def dscp(self) -> int:
        """RFC 2474: the six high-order bits of the traffic class."""
        return self.traffic_class >> 2

    @property
    def ecn(self) -> int:
        """RFC 3168: the two low-order bits of the traffic class."""
        return self.traffic_class & 0x03

    @property
    def flow_label(self) -> int:
        return ((self.buf[1] & 0x0F) << 16) | (self.buf[2] << 8) | self.buf[3]

    @property
    def payload_length(self) -> int:
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def next_header(self) -> int:
        return self.buf[6]

    @property
    def hop_limit(self) -> int:
        return self.buf[7]

    @property
    def src(self) -> bytes:
        return bytes(self.buf[8:24])

    @property
    def dst(self) -> bytes:
        return bytes(self.buf[24:40])

    @property
    def payload(self) -> memoryview:
        """Everything after the fixed header, extension headers included."""
        return self.buf[IPV6_HEADER_LEN:]

    def upper_payload(self, chain: Ipv6Chain) -> memoryview:
        """The upper-layer message found by ``walk_extensions``; its length is
        the pseudo-header length (RFC 8200 §8.1)."""
        return self.buf[chain.upper_offset :]

    def header(self) -> Ipv6Header:
        word, length, next_header, hop_limit, src, dst = _IPV6.unpack_from(self.buf)
        return Ipv6Header(
            src, dst, next_header, hop_limit, (word >> 20) & 0xFF, word & 0xFFFFF, length
        )

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class Ipv6Header:
    src: bytes
    dst: bytes
    next_header: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int = 0  # bytes after the fixed header, extension headers included

    @property
    def dscp(self) -> int:
        return self.traffic_class >> 2

    @property
    def ecn(self) -> int:
        return self.traffic_class & 0x03

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> Ipv6Header:
        return Ipv6View.checked(buf).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        word = (IPV6_VERSION << 28) | (self.traffic_class << 20) | self.flow_label
        _IPV6.pack_into(
            buf,
            offset,
            word,
            self.payload_length,
            self.next_header,
            self.hop_limit,
            self.src,
            self.dst,
        )
        return IPV6_HEADER_LEN

    def summary(self) -> str:
        text = (
            f"IP6 {format_ip(self.src)} > {format_ip(self.dst)} hlim {self.hop_limit}"
            f" len {self.payload_length} next {self.next_header}"
        )
        if self.traffic_class:
            text += f" tc 0x{self.traffic_class:02x}"
        if self.flow_label:
            text += f" flow 0x{self.flow_label:05x}"
        return text


# --- extension headers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ipv6OptionHint(IcmpHint):
    """Parameter Problem code 2 for an unrecognized option (RFC 8200 §4.2),
    with the option's action bits: 2 (binary 10) is answered whatever the
    destination, 3 (binary 11) only when the destination was not multicast
    (RFC 4443 §2.4 (e.3))."""

    action: int = OPT_ACTION_DISCARD_ICMP

    @property
    def multicast_ok(self) -> bool:
        """True if the error goes back even for a multicast destination."""
        return self.action == OPT_ACTION_DISCARD_ICMP


@dataclass(slots=True)
class Ipv6Fragment:
    """What the Fragment header of a received packet says (RFC 8200 §4.5)."""

    fragment_offset: int  # bytes (the header field times 8)
    more_fragments: bool
    ident: int
    header_offset: int  # of the Fragment header, from the start of the IPv6 header
    next_header: int  # of the fragmentable part (meaningful in the first fragment)

    @property
    def atomic(self) -> bool:
        """RFC 6946: offset 0 and M=0, processed as a whole packet."""
        return self.fragment_offset == 0 and not self.more_fragments


@dataclass(slots=True)
class Ipv6Chain:
    """The result of ``walk_extensions``; offsets are from the start of the
    IPv6 header."""

    upper_protocol: int  # next header value after the chain (may be unknown, or 59)
    upper_offset: int  # where that header/message starts
    next_header_pointer: int  # the field naming upper_protocol (for "unrecognized next header")
    # The part a Fragment header follows (RFC 8200 §4.5): the offset of the
    # Fragment header if there is one, else the end of the last Hop-by-Hop or
    # Routing header (or 40).
    unfragmentable_len: int = IPV6_HEADER_LEN
    fragment: Ipv6Fragment | None = None  # a real fragment ends the walk; an atomic one does not
    routing_seen: bool = False
    router_alert: int | None = None  # RFC 2711 value from the Hop-by-Hop header
    headers: list[tuple[int, int]] = field(default_factory=list)  # (next header value, offset)


def walk_extensions(view: Ipv6View) -> Ipv6Chain:
    """Walk the extension headers of a checked packet (RFC 8200 §4).

    Stops at the first value that is not Hop-by-Hop, Routing, Fragment or
    Destination Options, or after the Fragment header of a real fragment
    (non-zero offset or M set), whose fragmentable part is left to reassembly.
    Raises MalformedPacket, with an ICMP hint where RFC 8200 asks for one."""
    buf = view.buf
    next_header = buf[6]
    if next_header not in _EXTENSIONS:
        return Ipv6Chain(next_header, IPV6_HEADER_LEN, PTR_NEXT_HEADER)
    end = len(buf)
    chain = Ipv6Chain(next_header, IPV6_HEADER_LEN, PTR_NEXT_HEADER)
    headers = chain.headers
    pointer = PTR_NEXT_HEADER
    off = IPV6_HEADER_LEN
    while next_header in _EXTENSIONS:
        if next_header == NH_HOPOPTS and off != IPV6_HEADER_LEN:
            # RFC 8200 §4.1: Hop-by-Hop only right after the IPv6 header; any
            # other 0 is an unrecognized Next Header (§4, Parameter Problem code 1).
            hint = IcmpHint(
                IcmpHintKind.UNRECOGNIZED_NEXT_HEADER, _PP_UNRECOGNIZED_NEXT_HEADER, pointer
            )
            raise _drop(Drop.IPV6_HOP_BY_HOP_NOT_FIRST, f"at {off}", hint)
        if len(headers) >= IPV6_MAX_EXTENSIONS:
            raise _drop(Drop.IPV6_TOO_MANY_EXTENSIONS, f"more than {IPV6_MAX_EXTENSIONS}")
        if off + 8 > end:
            raise _drop(Drop.IPV6_EXT_TRUNCATED, f"header {next_header} at {off}")
        if next_header == NH_FRAGMENT:
            length = IPV6_FRAGMENT_HEADER_LEN
        else:
            length = (buf[off + 1] + 1) * 8  # Hdr Ext Len, 8-byte units after the first 8
            if off + length > end:
                raise _drop(Drop.IPV6_EXT_TRUNCATED, f"header {next_header} len {length} at {off}")
        headers.append((next_header, off))
        if next_header == NH_HOPOPTS:
            chain.router_alert = _walk_options(buf, off, length, hop_by_hop=True)
            if chain.fragment is None:
                chain.unfragmentable_len = off + length
        elif next_header == NH_DSTOPTS:
            _walk_options(buf, off, length, hop_by_hop=False)
        elif next_header == NH_ROUTING:
            _check_routing(buf, off)
            chain.routing_seen = True
            if chain.fragment is None:
                chain.unfragmentable_len = off + length
        else:
            frag = _check_fragment(buf, off, end)
            chain.fragment = frag
            chain.unfragmentable_len = off
            if not frag.atomic:
                next_header, pointer, off = buf[off], off, off + length
                break
        next_header, pointer, off = buf[off], off, off + length
    chain.upper_protocol = next_header
    chain.upper_offset = off
    chain.next_header_pointer = pointer
    return chain


def _walk_options(buf: memoryview, start: int, length: int, *, hop_by_hop: bool) -> int | None:
    """Check the option TLVs of a Hop-by-Hop or Destination Options header
    (RFC 8200 §4.2); return the Router Alert value if there is one."""
    i = start + 2
    end = start + length
    router_alert = None
    while i < end:
        kind = buf[i]
        if kind == OPT_PAD1:  # a single zero byte, no length
            i += 1
            continue
        if i + 2 > end or i + 2 + buf[i + 1] > end:
            raise _drop(Drop.IPV6_BAD_OPTION, f"option {kind} at {i} overruns its header")
        size = buf[i + 1]
        if kind == OPT_PADN:
            pass
        elif kind == OPT_ROUTER_ALERT and hop_by_hop:
            if size != 2:  # RFC 2711 §2.1
                raise _drop(Drop.IPV6_BAD_OPTION, f"router alert length {size}")
            router_alert = (buf[i + 2] << 8) | buf[i + 3]
        else:
            action = kind >> 6
            if action == OPT_ACTION_DISCARD:
                raise _drop(Drop.IPV6_BAD_OPTION, f"unrecognized option {kind:#04x}")
            if action != OPT_ACTION_SKIP:
                hint = Ipv6OptionHint(
                    IcmpHintKind.PARAMETER_PROBLEM, _PP_UNRECOGNIZED_OPTION, i, action
                )
                raise _drop(Drop.IPV6_BAD_OPTION, f"unrecognized option {kind:#04x}", hint)
        i += 2 + size
    return router_alert


def _check_routing(buf: memoryview, off: int) -> None:
    """RFC 8200 §4.4: we implement no Routing type, so a header with Segments
    Left 0 is ignored and any other is answered with Parameter Problem code 0
    pointing at the Routing Type (RFC 5095 §3 for type 0)."""
    routing_type, segments_left = buf[off + 2], buf[off + 3]
    if segments_left == 0:
        return
    hint = IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, _PP_ERRONEOUS_FIELD, off + 2)
    if routing_type == ROUTING_TYPE0:
        raise _drop(Drop.IPV6_ROUTING_TYPE0, f"segments left {segments_left}", hint)
    raise _drop(Drop.IPV6_BAD_ROUTING, f"type {routing_type} segments left {segments_left}", hint)


def _check_fragment(buf: memoryview, off: int, end: int) -> Ipv6Fragment:
    """RFC 8200 §4.5 receive checks. The reserved byte and bits are ignored."""
    next_header, _, word, ident = _FRAG.unpack_from(buf, off)
    fragment_offset = word & 0xFFF8
    more = bool(word & 1)
    data_len = end - (off + IPV6_FRAGMENT_HEADER_LEN)
    if more and data_len % 8:
        # "not a multiple of 8 octets and the M flag ... is 1": point at Payload Length.
        hint = IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, _PP_ERRONEOUS_FIELD, PTR_PAYLOAD_LENGTH)
        raise _drop(Drop.IPV6_BAD_FRAGMENT, f"fragment length {data_len} with M set", hint)
    # The Payload Length of the reassembled packet: unfragmentable part after
    # the fixed header, plus offset and length of this fragment's data.
    reassembled = (off - IPV6_HEADER_LEN) + fragment_offset + data_len
    if reassembled > IPV6_MAX_PAYLOAD:
        hint = IcmpHint(IcmpHintKind.PARAMETER_PROBLEM, _PP_ERRONEOUS_FIELD, off + 2)
        raise _drop(Drop.IPV6_BAD_FRAGMENT, f"reassembles to {reassembled} bytes", hint)
    return Ipv6Fragment(fragment_offset, more, ident, off, next_header)


@dataclass(slots=True)
class Ipv6FragmentHeader:
    """The Fragment header (RFC 8200 §4.5), for output fragmentation."""

    next_header: int
    fragment_offset: int = 0  # bytes, a multiple of 8
    more_fragments: bool = False
    ident: int = 0

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Ipv6FragmentHeader:
        if len(buf) < offset + IPV6_FRAGMENT_HEADER_LEN:
            raise _drop(Drop.IPV6_EXT_TRUNCATED, f"fragment header, {len(buf)} bytes")
        next_header, _, word, ident = _FRAG.unpack_from(buf, offset)
        return cls(next_header, word & 0xFFF8, bool(word & 1), ident)

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        word = (self.fragment_offset & 0xFFF8) | int(self.more_fragments)
        _FRAG.pack_into(buf, offset, self.next_header, 0, word, self.ident)
        return IPV6_FRAGMENT_HEADER_LEN

    def summary(self) -> str:
        more = " more" if self.more_fragments else ""
        return (
            f"frag id 0x{self.ident:08x} off {self.fragment_offset}{more} next {self.next_header}"
        )


def fragment_data_len(mtu: int, unfragmentable_len: int) -> int:
    """The largest fragment data (a multiple of 8, RFC 8200 §4.5) that fits in
    ``mtu`` after the unfragmentable part and a Fragment header."""
    return max(0, (mtu - unfragmentable_len - IPV6_FRAGMENT_HEADER_LEN) & ~7)


# --- addresses --------------------------------------------------------------


def modified_eui64(mac: bytes) -> bytes:
    """RFC 4291 App. A: the 8-byte interface identifier of a 48-bit MAC, with
    ff:fe in the middle and the universal/local bit inverted."""
    if len(mac) != 6:
        raise ValueError(f"not a MAC address: {bytes(mac).hex()}")
    return bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 and the modified EUI-64 of ``mac`` (RFC 4862 §5.3, RFC 2464 §5)."""
    return LINK_LOCAL_PREFIX + modified_eui64(mac)


def solicited_node_multicast(addr: bytes) -> bytes:
    """RFC 4291 §2.7.1: ff02::1:ff00:0/104 and the low 24 bits of ``addr``."""
    return SOLICITED_NODE_PREFIX + bytes(addr[13:16])


def multicast_mac(addr: bytes) -> bytes:
    """RFC 2464 §7: 33:33 and the low 32 bits of the multicast ``addr``."""
    return b"\x33\x33" + bytes(addr[12:16])
