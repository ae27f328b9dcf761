"""Neighbor Discovery for IPv6 (RFC 4861) messages and options.

A message here is a whole ICMPv6 message, starting at its 4-byte
type/code/checksum header: Router Solicitation (133), Router Advertisement
(134), Neighbor Solicitation (135), Neighbor Advertisement (136) and Redirect
(137). ``NdpView.checked`` verifies the checksum itself (the caller passes the
IPv6 pseudo-header sum, or None when the link vouches for it) and enforces the
validation that needs nothing but the message and the IP hop limit
(RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1):

* IP Hop Limit is 255, ICMP Code is 0, the message is long enough for its type;
* NS/NA targets are not multicast; a Redirect's destination is not multicast and
  its target is link-local or equal to the destination (§8.1);
* every option has a non-zero length and fits in the message (§4.6), and the
  options whose format we know have their fixed length: Prefix Information
  length 4 (§4.6.2), MTU length 1 (§4.6.4), RDNSS length >= 3 and odd with
  unicast servers (RFC 8106 §5.1, §5.3.1), DNSSL length >= 2 with well-formed
  names (RFC 8106 §5.2), Nonce length >= 1 (RFC 3971 §5.3.2). One malformed
  option invalidates the whole message. Unknown options are skipped by length.

Checks that need the IP addresses (an RA must come from a link-local source,
§6.1.2; a DAD NS from ``::`` goes to a solicited-node group and has no SLLA,
§7.1.1; ...) belong to the NDP machine: ``validate_addresses`` implements them
for it.

Link-layer address options are read for Ethernet (6 bytes); longer options
(other link types) are accepted and their first 6 bytes read.

RFC 4191: the RA's Default Router Preference (``RouterAdvertisement.preference``,
the reserved value read as medium, §2.2) and the Route Information option
(type 24, §2.3); an RIO whose Length does not fit its Prefix Length (§3.1),
or whose Route Preference is the reserved value (§2.3), is ignored (the
option, not the RA), kept as ``UnknownOption``.

Left out: SEND options other than the nonce (RFC 3971), RA flags other than
M/O/Prf as named fields (they stay in ``flags``), the PI R flag (RFC 6275),
and Redirected Header contents (kept as bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Self, TypeAlias, cast

from .. import checksum as csum
from ..addr import (
    IPV6_ANY,
    format_ip,
    format_mac,
    is_ipv6_link_local,
    is_ipv6_multicast,
    is_unicast,
)
from .errors import Drop, MalformedPacket
from .icmpv6 import (
    ICMPV6_NEIGHBOR_ADVERT,
    ICMPV6_NEIGHBOR_SOLICIT,
    ICMPV6_REDIRECT,
    ICMPV6_ROUTER_ADVERT,
    ICMPV6_ROUTER_SOLICIT,
    message_bytes,
    set_checksum,
)
from .ipv6 import SOLICITED_NODE_PREFIX

NDP_HOP_LIMIT = 255  # RFC 4861 §6.1, §7.1, §8.1 (gVisor header.NDPHopLimit)
NDP_INFINITE_LIFETIME = 0xFFFFFFFF  # seconds, RFC 4861 §4.6.2, RFC 8106 §5.1

# Minimum ICMP message lengths (4-byte ICMP header included), RFC 4861 §4.1-§4.5.
RS_MIN_LEN = 8
RA_MIN_LEN = 16  # gVisor NDPRAMinimumSize = 12 bytes after the ICMP header
NS_MIN_LEN = 24
NA_MIN_LEN = 24
REDIRECT_MIN_LEN = 40
_MIN_LEN = {
    ICMPV6_ROUTER_SOLICIT: RS_MIN_LEN,
    ICMPV6_ROUTER_ADVERT: RA_MIN_LEN,
    ICMPV6_NEIGHBOR_SOLICIT: NS_MIN_LEN,
    ICMPV6_NEIGHBOR_ADVERT: NA_MIN_LEN,
    ICMPV6_REDIRECT: REDIRECT_MIN_LEN,
}

# RA flags byte, RFC 4861 §4.2.
RA_FLAG_MANAGED = 0x80  # M: addresses via DHCPv6
RA_FLAG_OTHER = 0x40  # O: other configuration via DHCPv6
# RFC 4191 §2.2: the 2-bit Prf field (same bits in the RA flags and the RIO).
PRF_MASK = 0x18
PRF_SHIFT = 3
PRF_RESERVED = 0b10  # RFC 4191 §2.1
PREF_HIGH = 1
PREF_MEDIUM = 0
PREF_LOW = -1
_PRF_DECODE = {0b01: PREF_HIGH, 0b00: PREF_MEDIUM, 0b11: PREF_LOW, 0b10: PREF_MEDIUM}  # reserved
_PRF_ENCODE = {PREF_HIGH: 0b01, PREF_MEDIUM: 0b00, PREF_LOW: 0b11}
PREF_NAMES = {PREF_HIGH: "high", PREF_MEDIUM: "medium", PREF_LOW: "low"}
# NA flags (first byte of the reserved word), RFC 4861 §4.4.
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20
# Prefix Information flags, RFC 4861 §4.6.2.
PI_FLAG_ON_LINK = 0x80  # L
PI_FLAG_AUTONOMOUS = 0x40  # A

# Option types.
OPT_SOURCE_LINK_LAYER = 1  # RFC 4861 §4.6.1
OPT_TARGET_LINK_LAYER = 2  # RFC 4861 §4.6.1
OPT_PREFIX_INFORMATION = 3  # RFC 4861 §4.6.2
OPT_REDIRECTED_HEADER = 4  # RFC 4861 §4.6.3
OPT_MTU = 5  # RFC 4861 §4.6.4
OPT_NONCE = 14  # RFC 3971 §5.3.2
OPT_ROUTE_INFORMATION = 24  # RFC 4191 §2.3
OPT_RDNSS = 25  # RFC 8106 §5.1
OPT_DNSSL = 31  # RFC 8106 §5.2

PI_LEN = 4  # units of 8 bytes: body exactly 30 bytes (gVisor checks this)
MTU_LEN = 1
RDNSS_MIN_LEN = 3  # RFC 8106 §5.3.1
DNSSL_MIN_LEN = 2  # RFC 8106 §5.2
DNS_MAX_LABEL = 63  # RFC 1035 §2.3.4
DNS_MAX_NAME = 255  # RFC 1035 §2.3.4, wire form with the length bytes

_RS = struct.Struct("!BBH4x")
_RA = struct.Struct("!BBHBBHII")
_NS = struct.Struct("!BBH4x16s")
_NA = struct.Struct("!BBHB3x16s")
_REDIRECT = struct.Struct("!BBH4x16s16s")
_FIXED = {
    ICMPV6_ROUTER_SOLICIT: _RS,
    ICMPV6_ROUTER_ADVERT: _RA,
    ICMPV6_NEIGHBOR_SOLICIT: _NS,
    ICMPV6_NEIGHBOR_ADVERT: _NA,
    ICMPV6_REDIRECT: _REDIRECT,
}
_PI = struct.Struct("!BBBBII4x16s")
_MTU = struct.Struct("!BBxxI")
_RIO = struct.Struct("!BBBBI")
_LIFETIME = struct.Struct("!BBxxI")  # RDNSS and DNSSL option header
_LAYER = "ndp"

_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _lifetime(seconds: int) -> str:
    return "infinity" if seconds == NDP_INFINITE_LIFETIME else f"{seconds}s"


def _bad(reason: Drop, detail: str) -> MalformedPacket:
    return MalformedPacket(reason, detail, layer=_LAYER)


def _option_len(header: int, data_len: int) -> int:
    """Bytes of an option whose ``data_len`` data bytes follow a
    ``header``-byte header, padded to whole 8-byte units (RFC 4861 §4.6)."""
    return (header + data_len + 7) & ~7


def _emit_option(
    buf: bytearray | memoryview, offset: int, kind: int, header: int, data: bytes
) -> int:
    """Write type, length (8-byte units), zeros to ``header``, ``data`` and
    zero padding; returns the option length. Fields inside the header past
    the first two bytes are the caller's to write."""
    n = _option_len(header, len(data))
    buf[offset : offset + n] = bytes(n)
    buf[offset] = kind
    buf[offset + 1] = n // 8
    buf[offset + header : offset + header + len(data)] = data
    return n


# --------------------------------------------------------------------------- options


@dataclass(slots=True)
class _LinkLayerAddress:
    """Source/Target Link-Layer Address, RFC 4861 §4.6.1, for Ethernet."""

    mac: bytes

    TYPE: ClassVar[int]
    NAME: ClassVar[str]

    @property
    def length(self) -> int:
        return _option_len(2, len(self.mac))

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        return _emit_option(buf, offset, self.TYPE, 2, self.mac)

    def summary(self) -> str:
        return f"{self.NAME} {format_mac(self.mac)}"


@dataclass(slots=True)
class SourceLinkLayer(_LinkLayerAddress):
    """Source Link-Layer Address (type 1), RFC 4861 §4.6.1, Ethernet."""

    TYPE: ClassVar[int] = OPT_SOURCE_LINK_LAYER
    NAME: ClassVar[str] = "slla"


@dataclass(slots=True)
class TargetLinkLayer(_LinkLayerAddress):
    """Target Link-Layer Address (type 2), RFC 4861 §4.6.1, Ethernet."""

    TYPE: ClassVar[int] = OPT_TARGET_LINK_LAYER
    NAME: ClassVar[str] = "tlla"


@dataclass(slots=True)
class PrefixInformation:
    """Prefix Information (type 3), RFC 4861 §4.6.2. Lifetimes in seconds,
    ``NDP_INFINITE_LIFETIME`` is infinity."""

    prefix_len: int
    on_link: bool  # L
    autonomous: bool  # A
    valid_lifetime: int
    preferred_lifetime: int
    prefix: bytes  # 16 bytes

    TYPE: ClassVar[int] = OPT_PREFIX_INFORMATION

    @property
    def length(self) -> int:
        return 32

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        flags = (PI_FLAG_ON_LINK if self.on_link else 0) | (
            PI_FLAG_AUTONOMOUS if self.autonomous else 0
        )
        _PI.pack_into(
            buf,
            offset,
            self.TYPE,
            PI_LEN,
            self.prefix_len,
            flags,
            self.valid_lifetime,
            self.preferred_lifetime,
            self.prefix,
        )
        return 32

    def summary(self) -> str:
        flags = ("L" if self.on_link else "") + ("A" if self.autonomous else "")
        return (
            f"prefix {format_ip(self.prefix)}/{self.prefix_len} [{flags}]"
            f" valid {_lifetime(self.valid_lifetime)} pref {_lifetime(self.preferred_lifetime)}"
        )


@dataclass(slots=True)
class RedirectedHeader:
    """Redirected Header (type 4), RFC 4861 §4.6.3: as much of the redirected
    packet as fits; on emit it is padded with zeros to a multiple of 8."""

    packet: bytes

    TYPE: ClassVar[int] = OPT_REDIRECTED_HEADER

    @property
    def length(self) -> int:
        return _option_len(8, len(self.packet))

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        return _emit_option(buf, offset, self.TYPE, 8, self.packet)  # 6 reserved bytes

    def summary(self) -> str:
        return f"redirected header {len(self.packet)} bytes"


def decode_preference(flags: int) -> int:
    """RFC 4191 §2.1: the Prf bits of an RA flags byte or an RIO; the
    reserved value (10) is treated as medium (§2.2; an RIO with it is
    ignored before, §2.3)."""
    return _PRF_DECODE[(flags & PRF_MASK) >> PRF_SHIFT]


def encode_preference(preference: int) -> int:
    return _PRF_ENCODE[preference] << PRF_SHIFT


@dataclass(slots=True)
class RouteInformation:
    """Route Information (type 24), RFC 4191 §2.3: ``prefix/prefix_len`` is
    reachable through the advertising router with ``preference`` (1 high,
    0 medium, -1 low) for ``lifetime`` seconds (0xffffffff: infinity)."""

    prefix_len: int
    preference: int
    lifetime: int
    prefix: bytes  # 16 bytes, bits past prefix_len zero on emit

    TYPE: ClassVar[int] = OPT_ROUTE_INFORMATION

    @property
    def length(self) -> int:
        # §2.3: the shortest Length that carries the prefix.
        return 8 if self.prefix_len == 0 else 16 if self.prefix_len <= 64 else 24

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        n = self.length
        _RIO.pack_into(
            buf,
            offset,
            self.TYPE,
            n // 8,
            self.prefix_len,
            encode_preference(self.preference),
            self.lifetime,
        )
        buf[offset + 8 : offset + n] = self.prefix[: n - 8]
        return n

    def summary(self) -> str:
        return (
            f"route {format_ip(self.prefix)}/{self.prefix_len}"
            f" pref {PREF_NAMES[self.preference]} lifetime {_lifetime(self.lifetime)}"
        )


@dataclass(slots=True)
class Mtu:
    """MTU (type 5), RFC 4861 §4.6.4, in bytes."""

    mtu: int

    TYPE: ClassVar[int] = OPT_MTU

    @property
    def length(self) -> int:
        return 8

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        _MTU.pack_into(buf, offset, self.TYPE, MTU_LEN, self.mtu)
        return 8

    def summary(self) -> str:
        return f"mtu {self.mtu}"


@dataclass(slots=True)
class Nonce:
    """Nonce (type 14), RFC 3971 §5.3.2, used by DAD (RFC 7527): at least 6
    bytes, and 6 + 8k so that the option is a multiple of 8 bytes."""

    value: bytes

    TYPE: ClassVar[int] = OPT_NONCE

    @property
    def length(self) -> int:
        return 2 + len(self.value)

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        n = self.length
        if n % 8 or n < 8:  # padding would change the nonce
            raise ValueError(f"nonce of {len(self.value)} bytes: need 6 + 8k")
        return _emit_option(buf, offset, self.TYPE, 2, self.value)

    def summary(self) -> str:
        return f"nonce {self.value.hex()}"


@dataclass(slots=True)
class RecursiveDns:
    """Recursive DNS Server (type 25), RFC 8106 §5.1. ``lifetime`` in seconds
    (0: stop using these servers; ``NDP_INFINITE_LIFETIME``: forever)."""

    lifetime: int
    servers: tuple[bytes, ...]  # 16 bytes each, unicast, at least one

    TYPE: ClassVar[int] = OPT_RDNSS

    @property
    def length(self) -> int:
        return _option_len(8, 16 * len(self.servers))

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        n = _emit_option(buf, offset, self.TYPE, 8, b"".join(self.servers))
        _LIFETIME.pack_into(buf, offset, self.TYPE, n // 8, self.lifetime)
        return n

    def summary(self) -> str:
        servers = ", ".join(format_ip(s) for s in self.servers)
        return f"rdnss [{servers}] lifetime {_lifetime(self.lifetime)}"


def encode_domains(domains: tuple[str, ...]) -> bytes:
    """RFC 1035 §3.1 uncompressed names, each ending with the root label."""
    out = bytearray()
    for domain in domains:
        labels = domain[:-1].split(".") if domain.endswith(".") else domain.split(".")
        start = len(out)
        for label in labels:
            raw = label.encode("ascii")
            if not raw or len(raw) > DNS_MAX_LABEL or not set(raw) <= _LDH:
                raise ValueError(f"bad domain name {domain!r}")
            out.append(len(raw))
            out += raw
        out.append(0)
        if len(out) - start > DNS_MAX_NAME:
            raise ValueError(f"domain name too long: {domain!r}")
    return bytes(out)


def decode_domains(body: memoryview) -> tuple[str, ...]:
    """The names of a DNSSL body (after the 8-byte header). A zero byte where a
    name would start begins the padding, which is ignored (RFC 8106 §5.2).
    Labels must be letters, digits and hyphens (RFC 1035 §2.3.1 as relaxed by
    RFC 1123 §2.1); compression pointers are not allowed."""
    domains: list[str] = []
    i, end = 0, len(body)
    while i < end and body[i] != 0:
        labels: list[str] = []
        start = i
        while True:
            if i >= end:
                raise _bad(Drop.NDP_BAD_OPTION_BODY, "DNSSL name runs past the option")
            n = body[i]
            if n == 0:
                i += 1
                break
            if n > DNS_MAX_LABEL or i + 1 + n > end:
                raise _bad(Drop.NDP_BAD_OPTION_BODY, f"DNSSL label length {n}")
            raw = bytes(body[i + 1 : i + 1 + n])
            if not set(raw) <= _LDH:
                raise _bad(Drop.NDP_BAD_OPTION_BODY, "DNSSL label characters")
            labels.append(raw.decode("ascii"))
            i += 1 + n
        if i - start > DNS_MAX_NAME:
            raise _bad(Drop.NDP_BAD_OPTION_BODY, "DNSSL name too long")
        domains.append(".".join(labels))
    if not domains:
        raise _bad(Drop.NDP_BAD_OPTION_BODY, "DNSSL without names")
    return tuple(domains)


@dataclass(slots=True)
class DnsSearchList:
    """DNS Search List (type 31), RFC 8106 §5.2. ``lifetime`` in seconds.
    Domains without the trailing dot."""

    lifetime: int
    domains: tuple[str, ...]

    TYPE: ClassVar[int] = OPT_DNSSL

    @property
    def length(self) -> int:
        return _option_len(8, len(encode_domains(self.domains)))

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        n = _emit_option(buf, offset, self.TYPE, 8, encode_domains(self.domains))
        _LIFETIME.pack_into(buf, offset, self.TYPE, n // 8, self.lifetime)
        return n

    def summary(self) -> str:
        return f"dnssl [{', '.join(self.domains)}] lifetime {_lifetime(self.lifetime)}"


@dataclass(slots=True)
class UnknownOption:
    """Any other option: ``data`` is what follows the type and length bytes
    (emit pads it with zeros to a multiple of 8 with the 2-byte header)."""

    type: int
    data: bytes

    @property
    def length(self) -> int:
        return _option_len(2, len(self.data))

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        return _emit_option(buf, offset, self.type, 2, self.data)

    def summary(self) -> str:
        return f"option {self.type} len {self.length}"


NdpOption: TypeAlias = (
    SourceLinkLayer
    | TargetLinkLayer
    | PrefixInformation
    | RedirectedHeader
    | RouteInformation
    | Mtu
    | Nonce
    | RecursiveDns
    | DnsSearchList
    | UnknownOption
)


def _decode_option(kind: int, opt: memoryview) -> NdpOption:
    """Decode one option (``opt`` is the whole option, 8 * length bytes);
    raises MalformedPacket for a body that its type does not allow."""
    units = len(opt) // 8
    if kind == OPT_SOURCE_LINK_LAYER:
        return SourceLinkLayer(bytes(opt[2:8]))
    if kind == OPT_TARGET_LINK_LAYER:
        return TargetLinkLayer(bytes(opt[2:8]))
    if kind == OPT_PREFIX_INFORMATION:
        if units != PI_LEN:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"prefix information length {units}")
        _, _, plen, flags, valid, preferred, prefix = _PI.unpack_from(opt)
        return PrefixInformation(
            plen,
            bool(flags & PI_FLAG_ON_LINK),
            bool(flags & PI_FLAG_AUTONOMOUS),
            valid,
            preferred,
            prefix,
        )
    if kind == OPT_REDIRECTED_HEADER:
        return RedirectedHeader(bytes(opt[8:]))
    if kind == OPT_ROUTE_INFORMATION:
        plen = opt[2]
        # RFC 4191 §2.3, §3.1: Length 1-3, long enough for the prefix; else
        # the option (only) is ignored.
        if units > 3 or plen > 128 or (plen > 64 and units < 3) or (plen > 0 and units < 2):
            return UnknownOption(kind, bytes(opt[2:]))
        _, _, _, flags, lifetime = _RIO.unpack_from(opt)
        if (flags & PRF_MASK) >> PRF_SHIFT == PRF_RESERVED:
            # RFC 4191 §2.3: a Route Preference of 10 (reserved) makes the
            # option ignored (unlike the RA header's, §2.2); Linux's too.
            return UnknownOption(kind, bytes(opt[2:]))
        prefix = bytes(opt[8:]) + bytes(24 - len(opt))
        return RouteInformation(plen, decode_preference(flags), lifetime, prefix)
    if kind == OPT_MTU:
        if units != MTU_LEN:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"MTU length {units}")
        return Mtu(_MTU.unpack_from(opt)[2])
    if kind == OPT_NONCE:
        return Nonce(bytes(opt[2:]))
    if kind == OPT_RDNSS:
        # RFC 8106 §5.3.1: length >= 3; odd so that the addresses fill the body.
        if units < RDNSS_MIN_LEN or not units & 1:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"RDNSS length {units}")
        lifetime = _LIFETIME.unpack_from(opt)[2]
        servers = tuple(bytes(opt[i : i + 16]) for i in range(8, len(opt), 16))
        for server in servers:
            # RFC 8106 §5.1: every server unicast (not ::, not ff00::/8).
            if not is_unicast(server):
                raise _bad(Drop.NDP_BAD_OPTION_BODY, f"RDNSS server {format_ip(server)}")
        return RecursiveDns(lifetime, servers)
    if kind == OPT_DNSSL:
        if units < DNSSL_MIN_LEN:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"DNSSL length {units}")
        return DnsSearchList(_LIFETIME.unpack_from(opt)[2], decode_domains(opt[8:]))
    return UnknownOption(kind, bytes(opt[2:]))


def _iter_options(buf: memoryview, offset: int) -> Iterator[NdpOption]:
    """RFC 4861 §4.6: type, length in units of 8 bytes (0 is invalid), body."""
    end = len(buf)
    while offset < end:
        if end - offset < 2:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"{end - offset} byte(s) after the options")
        units = buf[offset + 1]
        if units == 0:
            raise _bad(Drop.NDP_ZERO_LENGTH_OPTION, f"option {buf[offset]} at {offset}")
        n = units * 8
        if offset + n > end:
            raise _bad(Drop.NDP_BAD_OPTION_LENGTH, f"option {buf[offset]} length {units}")
        yield _decode_option(buf[offset], buf[offset : offset + n])
        offset += n


# --------------------------------------------------------------------------- messages


class _Message:
    """What every NDP message dataclass shares: options, length, parse, emit."""

    __slots__ = ()
    TYPE: ClassVar[int]
    FIXED_LEN: ClassVar[int]
    options: list[NdpOption]
    checksum: int

    @property
    def length(self) -> int:
        """The whole ICMPv6 message, in bytes (the pseudo-header length)."""
        return self.FIXED_LEN + sum(o.length for o in self.options)

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        raise NotImplementedError

    @classmethod
    def parse(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        hop_limit: int | None = None,
    ) -> Self:
        """``NdpView.checked(...).header()``, which must be of this type
        (else ``NDP_BAD_TYPE``)."""
        view = NdpView.checked(buf, pseudo=pseudo, hop_limit=hop_limit)
        if view.type != cls.TYPE:
            raise _bad(Drop.NDP_BAD_TYPE, f"type {view.type}, expected {cls.TYPE}")
        return cast(Self, view.header())  # the type byte decides the class

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        """Write the whole message (fixed part and options) at ``offset``;
        returns the bytes written. With ``pseudo`` (the sum of
        ``icmpv6_pseudo(src, dst, self.length)``) the checksum is computed
        and stored in ``self.checksum`` too."""
        pos = offset + self.FIXED_LEN
        for opt in self.options:
            pos += opt.emit(buf, pos)
        n = pos - offset
        if pseudo is None:
            self._emit_fixed(buf, offset, self.checksum)
        else:
            self._emit_fixed(buf, offset, 0)
            # a slot of every message dataclass, not of this mixin (mypy sees only the mixin)
            self.checksum = set_checksum(buf, offset, n, pseudo)  # type: ignore[misc]
        return n

    def to_bytes(self, src: bytes | None = None, dst: bytes | None = None) -> bytes:
        """The message as new bytes; with the IPv6 ``src`` and ``dst``, checksummed."""
        return message_bytes(self, src, dst)

    def _options_summary(self) -> str:
        if not self.options:
            return ""
        return " [" + ", ".join(o.summary() for o in self.options) + "]"


@dataclass(slots=True)
class RouterSolicitation(_Message):
    """Router Solicitation (133), RFC 4861 §4.1."""

    options: list[NdpOption] = field(default_factory=list)
    checksum: int = 0

    TYPE: ClassVar[int] = ICMPV6_ROUTER_SOLICIT
    FIXED_LEN: ClassVar[int] = RS_MIN_LEN

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        _RS.pack_into(buf, offset, self.TYPE, 0, checksum)

    def summary(self) -> str:
        return "NDP router solicitation" + self._options_summary()


@dataclass(slots=True)
class RouterAdvertisement(_Message):
    """Router Advertisement (134), RFC 4861 §4.2. ``flags`` is the raw byte
    (M 0x80, O 0x40, and bits of later RFCs: H, Prf, P)."""

    cur_hop_limit: int = 0  # 0: unspecified
    flags: int = 0
    router_lifetime: int = 0  # seconds; 0: not a default router
    reachable_time: int = 0  # milliseconds; 0: unspecified
    retrans_timer: int = 0  # milliseconds; 0: unspecified
    options: list[NdpOption] = field(default_factory=list)
    checksum: int = 0

    TYPE: ClassVar[int] = ICMPV6_ROUTER_ADVERT
    FIXED_LEN: ClassVar[int] = RA_MIN_LEN

    @property
    def managed(self) -> bool:
        """M: addresses are available via DHCPv6 (RFC 4861 §4.2)."""
        return bool(self.flags & RA_FLAG_MANAGED)

    @property
    def other(self) -> bool:
        """O: other configuration is available via DHCPv6."""
        return bool(self.flags & RA_FLAG_OTHER)

    @property
    def preference(self) -> int:
        """RFC 4191 §2.2 Default Router Preference: 1 high, 0 medium (also
        for the reserved value), -1 low."""
        return decode_preference(self.flags)

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        _RA.pack_into(
            buf,
            offset,
            self.TYPE,
            0,
            checksum,
            self.cur_hop_limit,
            self.flags,
            self.router_lifetime,
            self.reachable_time,
            self.retrans_timer,
        )

    def summary(self) -> str:
        flags = " ".join(f for f, on in (("M", self.managed), ("O", self.other)) if on)
        return (
            f"NDP router advertisement hop limit {self.cur_hop_limit} flags [{flags}]"
            f" router lifetime {self.router_lifetime}s reachable {self.reachable_time}ms"
            f" retrans {self.retrans_timer}ms" + self._options_summary()
        )


@dataclass(slots=True)
class NeighborSolicitation(_Message):
    """Neighbor Solicitation (135), RFC 4861 §4.3. For DAD (RFC 4862 §5.4.2)
    the source is :: and the options carry no SLLA (a ``Nonce`` may be added,
    RFC 7527)."""

    target: bytes = IPV6_ANY
    options: list[NdpOption] = field(default_factory=list)
    checksum: int = 0

    TYPE: ClassVar[int] = ICMPV6_NEIGHBOR_SOLICIT
    FIXED_LEN: ClassVar[int] = NS_MIN_LEN

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        _NS.pack_into(buf, offset, self.TYPE, 0, checksum, self.target)

    def summary(self) -> str:
        return (
            f"NDP neighbor solicitation who has {format_ip(self.target)}" + self._options_summary()
        )


@dataclass(slots=True)
class NeighborAdvertisement(_Message):
    """Neighbor Advertisement (136), RFC 4861 §4.4."""

    router: bool = False  # R
    solicited: bool = False  # S
    override: bool = False  # O
    target: bytes = IPV6_ANY
    options: list[NdpOption] = field(default_factory=list)
    checksum: int = 0

    TYPE: ClassVar[int] = ICMPV6_NEIGHBOR_ADVERT
    FIXED_LEN: ClassVar[int] = NA_MIN_LEN

    @property
    def flags(self) -> int:
        return (
            (NA_FLAG_ROUTER if self.router else 0)
            | (NA_FLAG_SOLICITED if self.solicited else 0)
            | (NA_FLAG_OVERRIDE if self.override else 0)
        )

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        _NA.pack_into(buf, offset, self.TYPE, 0, checksum, self.flags, self.target)

    def summary(self) -> str:
        flags = " ".join(
            f for f, on in (("R", self.router), ("S", self.solicited), ("O", self.override)) if on
        )
        return (
            f"NDP neighbor advertisement tgt is {format_ip(self.target)} flags [{flags}]"
            + self._options_summary()
        )


@dataclass(slots=True)
class Redirect(_Message):
    """Redirect (137), RFC 4861 §4.5: packets for ``destination`` should go
    to ``target`` (a better router, or the destination itself when on-link)."""

    target: bytes = IPV6_ANY
    destination: bytes = IPV6_ANY
    options: list[NdpOption] = field(default_factory=list)
    checksum: int = 0

    TYPE: ClassVar[int] = ICMPV6_REDIRECT
    FIXED_LEN: ClassVar[int] = REDIRECT_MIN_LEN

    def _emit_fixed(self, buf: bytearray | memoryview, offset: int, checksum: int) -> None:
        _REDIRECT.pack_into(buf, offset, self.TYPE, 0, checksum, self.target, self.destination)

    def summary(self) -> str:
        return (
            f"NDP redirect {format_ip(self.destination)} to {format_ip(self.target)}"
            + self._options_summary()
        )


NdpMessage: TypeAlias = (
    RouterSolicitation
    | RouterAdvertisement
    | NeighborSolicitation
    | NeighborAdvertisement
    | Redirect
)


# --------------------------------------------------------------------------- view


class NdpView:
    """Zero-copy view of one NDP message (types 133-137), from the ICMPv6
    type byte to the end of the IPv6 payload."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        hop_limit: int | None = None,
    ) -> NdpView:
        """Validate ``buf`` (see the module docstring). ``pseudo`` is the IPv6
        pseudo-header sum to verify the checksum against (None skips it);
        ``hop_limit`` the IP Hop Limit (None skips the check)."""
        buf = memoryview(buf)
        if len(buf) < 4:
            raise _bad(Drop.NDP_TRUNCATED, f"{len(buf)} bytes")
        kind, code = buf[0], buf[1]
        min_len = _MIN_LEN.get(kind)
        if min_len is None:
            raise _bad(Drop.NDP_BAD_TYPE, f"type {kind}")
        if pseudo is not None and not csum.verify(buf, pseudo):
            raise MalformedPacket(Drop.ICMPV6_BAD_CHECKSUM, layer=_LAYER)
        # RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1: hop limit 255, code 0.
        if hop_limit is not None and hop_limit != NDP_HOP_LIMIT:
            raise _bad(Drop.NDP_BAD_HOP_LIMIT, f"hop limit {hop_limit}")
        if code != 0:
            raise _bad(Drop.NDP_BAD_CODE, f"code {code}")
        if len(buf) < min_len:
            raise _bad(Drop.NDP_TRUNCATED, f"type {kind}: {len(buf)} bytes")
        if kind in (ICMPV6_NEIGHBOR_SOLICIT, ICMPV6_NEIGHBOR_ADVERT):
            # §7.1.1, §7.1.2: "Target Address is not a multicast address".
            if is_ipv6_multicast(buf[8:24]):
                raise _bad(Drop.NDP_BAD_TARGET, "multicast target")
        elif kind == ICMPV6_REDIRECT:
            # §8.1: destination not multicast; target link-local or == destination.
            target, destination = buf[8:24], buf[24:40]
            if is_ipv6_multicast(destination):
                raise _bad(Drop.NDP_BAD_TARGET, "multicast destination")
            if not is_ipv6_link_local(target) and target != destination:
                raise _bad(Drop.NDP_BAD_TARGET, "target neither link-local nor destination")
        for _ in _iter_options(buf, min_len):  # §6.1.2 etc.: options well formed
            pass
        return cls(buf)

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
    def options_offset(self) -> int:
        return _MIN_LEN[self.buf[0]]

    @property
    def options_buf(self) -> memoryview:
        return self.buf[_MIN_LEN[self.buf[0]] :]

    @property
    def target(self) -> bytes | None:
        """The Target Address of an NS, NA or Redirect, else None."""
        if self.buf[0] in (ICMPV6_NEIGHBOR_SOLICIT, ICMPV6_NEIGHBOR_ADVERT, ICMPV6_REDIRECT):
            return bytes(self.buf[8:24])
        return None

    @property
    def destination(self) -> bytes | None:
        """The Destination Address of a Redirect, else None."""
        if self.buf[0] == ICMPV6_REDIRECT:
            return bytes(self.buf[24:40])
        return None

    def fields(self) -> tuple:
        """The fixed part, by type: RS (type, code, checksum); RA (type, code,
        checksum, cur_hop_limit, flags, router_lifetime, reachable_time,
        retrans_timer); NS (type, code, checksum, target); NA (type, code,
        checksum, flags, target); Redirect (type, code, checksum, target,
        destination)."""
        return _FIXED[self.buf[0]].unpack_from(self.buf)

    def options(self) -> Iterator[NdpOption]:
        """The options in wire order."""
        return _iter_options(self.buf, _MIN_LEN[self.buf[0]])

    def header(self) -> NdpMessage:
        """The message as its dataclass, options included."""
        f = self.fields()
        opts = list(self.options())
        kind = f[0]
        if kind == ICMPV6_ROUTER_SOLICIT:
            return RouterSolicitation(opts, f[2])
        if kind == ICMPV6_ROUTER_ADVERT:
            return RouterAdvertisement(f[3], f[4], f[5], f[6], f[7], opts, f[2])
        if kind == ICMPV6_NEIGHBOR_SOLICIT:
            return NeighborSolicitation(f[3], opts, f[2])
        if kind == ICMPV6_NEIGHBOR_ADVERT:
            flags = f[3]
            return NeighborAdvertisement(
                bool(flags & NA_FLAG_ROUTER),
                bool(flags & NA_FLAG_SOLICITED),
                bool(flags & NA_FLAG_OVERRIDE),
                f[4],
                opts,
                f[2],
            )
        return Redirect(f[3], f[4], opts, f[2])

    def summary(self) -> str:
        return self.header().summary()


def parse(
    buf: bytes | bytearray | memoryview, *, pseudo: int | None = None, hop_limit: int | None = None
) -> NdpMessage:
    """Any NDP message to its dataclass (= ``NdpView.checked(...).header()``)."""
    return NdpView.checked(buf, pseudo=pseudo, hop_limit=hop_limit).header()


# --------------------------------------------------------------------------- address rules


def validate_ra_source(src: bytes) -> None:
    """RFC 4861 §6.1.2: an RA's IP source must be link-local."""
    if len(src) != 16 or not is_ipv6_link_local(src):
        raise _bad(Drop.NDP_BAD_SOURCE, f"RA from {format_ip(src)}")


def validate_addresses(view: NdpView, src: bytes, dst: bytes) -> None:
    """The validity checks of RFC 4861 that need the IP addresses, for the NDP
    machine to call after ``checked``:

    * §6.1.1 RS: from :: → no SLLA option;
    * §6.1.2 RA and §8.1 Redirect: source link-local;
    * §7.1.1 NS: from :: → destination is a solicited-node group
      (ff02::1:ffXX:XXXX) and no SLLA option;
    * §7.1.2 NA: to a multicast destination → Solicited flag is zero.
    """
    kind = view.type
    if kind in (ICMPV6_ROUTER_ADVERT, ICMPV6_REDIRECT):
        if not is_ipv6_link_local(src):
            raise _bad(Drop.NDP_BAD_SOURCE, f"type {kind} from {format_ip(src)}")
    elif kind in (ICMPV6_ROUTER_SOLICIT, ICMPV6_NEIGHBOR_SOLICIT) and src == IPV6_ANY:
        if any(isinstance(o, SourceLinkLayer) for o in view.options()):
            raise _bad(Drop.NDP_BAD_SOURCE, "SLLA with unspecified source")
        if kind == ICMPV6_NEIGHBOR_SOLICIT and dst[:13] != SOLICITED_NODE_PREFIX:
            raise _bad(Drop.NDP_BAD_DESTINATION, f"DAD NS to {format_ip(dst)}")
    elif (
        kind == ICMPV6_NEIGHBOR_ADVERT
        and is_ipv6_multicast(dst)
        and view.buf[4] & NA_FLAG_SOLICITED
    ):
        raise _bad(Drop.NDP_BAD_DESTINATION, "solicited NA to multicast")
