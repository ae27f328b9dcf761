"""Internet Group Management Protocol: IGMPv1 (RFC 1112 appendix I), IGMPv2
(RFC 2236) and IGMPv3 (RFC 3376 §4) messages.

A message here is the whole IGMP message (the entire IPv4 payload). Its
checksum is RFC 1071 over the whole message, with no pseudo-header (RFC 2236
§2.3, RFC 3376 §4.1.2), also over any bytes beyond those the message type
defines; ``verify_checksum=False`` skips it when the link vouches for it.

* Membership Query (0x11): one type, three versions told apart by length and
  Max Resp Code (RFC 3376 §7.1): 8 bytes with code 0 is IGMPv1, 8 bytes with
  a non-zero code is IGMPv2, 12 or more is IGMPv3 (§4.1); 9-11 bytes "must be
  ignored" (``IGMP_TRUNCATED``). ``IgmpQuery`` keeps the Max Resp Time in
  tenths of a second whatever the version (decoded from the §4.1.1 floating
  point form for v3; ``V1_MAX_RESP_DS`` for v1, whose field is unused).
* Version 3 Membership Report (0x22), RFC 3376 §4.2: group records with their
  sources and auxiliary data. Records of unknown type are kept (as their int):
  §4.2.12 says to ignore such a record, not the report. §4.2.10 says to send no
  auxiliary data and ignore what is received; it is kept here for the caller.
* IGMPv1 Report (0x12), IGMPv2 Report (0x16) and Leave Group (0x17), RFC 2236
  §2: the 8-byte message ``IgmpV2Message``. Bytes after the 8th are ignored
  (RFC 2236 §2.5) but still covered by the checksum.

The IP layer, not this module, must send every IGMP message with TTL 1
(``IGMP_TTL``), ToS 0xc0 (``IGMP_TOS``) and, for IGMPv2 and v3, a Router Alert
option (``ROUTER_ALERT_OPTION``) (RFC 3376 §4, RFC 2236 §2), to the
destination ``destination()`` gives (RFC 3376 §4.1.12, §4.2.14; RFC 2236 §3).

Left out: the Multicast Router Discovery messages (0x30-0x32, RFC 4286) and
the obsolete DVMRP/PIMv1/mtrace types sharing protocol 2; they parse as
``IGMP_BAD_TYPE`` (RFC 3376 §4: unrecognized types are silently ignored).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .. import checksum as csum
from ..addr import IPV4_ANY, format_ip, is_ipv4_multicast
from .errors import Drop, MalformedPacket
from .ipv4 import IPOPT_ROUTER_ALERT

# Message types (RFC 3376 §4, RFC 2236 §2.1, RFC 1112 appendix I).
IGMP_MEMBERSHIP_QUERY = 0x11
IGMPV1_REPORT = 0x12
IGMPV2_REPORT = 0x16
IGMPV2_LEAVE = 0x17
IGMPV3_REPORT = 0x22

ALL_SYSTEMS = bytes((224, 0, 0, 1))  # 224.0.0.1, RFC 1112 §4: general queries
ALL_ROUTERS = bytes((224, 0, 0, 2))  # 224.0.0.2, RFC 2236 §3: IGMPv2 Leave Group
IGMPV3_ALL_ROUTERS = bytes((224, 0, 0, 22))  # 224.0.0.22, RFC 3376 §4.2.14: v3 reports

IGMP_TTL = 1  # RFC 3376 §4, RFC 2236 §2
IGMP_TOS = 0xC0  # IP Precedence Internetwork Control, RFC 3376 §4
# IPv4 Router Alert option, RFC 2113 §2.1: copied flag + type 20, length 4, value 0.
ROUTER_ALERT_OPTION = bytes((IPOPT_ROUTER_ALERT, 4, 0, 0))

IGMP_MIN_LEN = 8  # every IGMP message, RFC 2236 §2
IGMPV3_QUERY_MIN_LEN = 12  # RFC 3376 §4.1, §7.1
IGMPV3_REPORT_MIN_LEN = 8  # RFC 3376 §4.2
IGMPV3_RECORD_MIN_LEN = 8  # RFC 3376 §4.2.4

# Defaults of RFC 3376 §8 (for the machines; here for one source of truth).
DEFAULT_ROBUSTNESS = 2  # §8.1
DEFAULT_QUERY_INTERVAL_S = 125  # §8.2
DEFAULT_QUERY_RESPONSE_INTERVAL_DS = 100  # §8.3, tenths of a second (10 s)
UNSOLICITED_REPORT_INTERVAL_S = 1  # §8.11 (IGMPv3)
V2_UNSOLICITED_REPORT_INTERVAL_S = 10  # RFC 2236 §8.10
V1_MAX_RESP_DS = 100  # RFC 3376 §7.1: an IGMPv1 query (code 0) means 10 s

_MAX_FLOAT8 = 0x1F << 10  # 31,744: largest value of the 8-bit float form

_SHORT = struct.Struct("!BBH4s")  # type, max resp code, checksum, group address
_QUERY_V3 = struct.Struct("!BBH4sBBH")  # ... + Resv/S/QRV, QQIC, number of sources
_REPORT = struct.Struct("!BxHxxH")  # type, checksum, number of group records
_RECORD = struct.Struct("!BBH4s")  # record type, aux data len, number of sources, group
_U16 = struct.Struct("!H")
_LAYER = "igmp"


class IgmpRecordType(enum.IntEnum):
    """Group record types, RFC 3376 §4.2.12."""

    MODE_IS_INCLUDE = 1
    MODE_IS_EXCLUDE = 2
    CHANGE_TO_INCLUDE_MODE = 3
    CHANGE_TO_EXCLUDE_MODE = 4
    ALLOW_NEW_SOURCES = 5
    BLOCK_OLD_SOURCES = 6


def _decode_float8(code: int) -> int:
    # RFC 3376 §4.1.1/§4.1.7: below 128 the value itself, else 1|exp(3)|mant(4)
    # meaning (mant | 0x10) << (exp + 3).
    if code < 0x80:
        return code
    return ((code & 0x0F) | 0x10) << (((code >> 4) & 0x7) + 3)


def _encode_float8(value: int) -> int:
    if value < 0x80:
        return max(value, 0)
    for exp in range(8):
        mant = (value >> (exp + 3)) - 0x10
        if mant <= 0x0F:
            return 0x80 | (exp << 4) | mant
    return 0xFF


def decode_max_resp_code(code: int) -> int:
    """IGMPv3 Max Resp Code to Max Resp Time in tenths of a second,
    RFC 3376 §4.1.1."""
    return _decode_float8(code)


def encode_max_resp_code(ds: int) -> int:
    """Max Resp Time (tenths of a second) to the IGMPv3 code, rounding down;
    clamps to the largest representable time (31,744 ds)."""
    return _encode_float8(ds)


def decode_qqic(qqic: int) -> int:
    """Querier's Query Interval Code to seconds, RFC 3376 §4.1.7."""
    return _decode_float8(qqic)


def encode_qqic(interval_s: int) -> int:
    """Query interval (s) to QQIC, rounding down; clamps to 31,744 s."""
    return _encode_float8(interval_s)


def _bad(reason: Drop, detail: str) -> MalformedPacket:
    return MalformedPacket(reason, detail, layer=_LAYER)


def _check_common(buf: memoryview, kinds: tuple[int, ...], verify_checksum: bool) -> None:
    if len(buf) < IGMP_MIN_LEN:
        raise _bad(Drop.IGMP_TRUNCATED, f"{len(buf)} bytes")
    if buf[0] not in kinds:
        raise _bad(Drop.IGMP_BAD_TYPE, f"type {buf[0]:#04x}")
    # RFC 2236 §2.3, RFC 3376 §4.1.2: over the whole IGMP message, no pseudo-header.
    if verify_checksum and not csum.verify(buf):
        raise _bad(Drop.IGMP_BAD_CHECKSUM, f"checksum {(buf[2] << 8) | buf[3]:#06x}")


def _set_checksum(buf: bytearray | memoryview, offset: int, length: int) -> None:
    """Fill the checksum of the ``length``-byte message at ``offset`` (its
    checksum field already zero)."""
    _U16.pack_into(buf, offset + 2, csum.checksum(memoryview(buf)[offset : offset + length]))


def _sources(buf: memoryview, start: int, count: int) -> tuple[bytes, ...]:
    return tuple(bytes(buf[start + 4 * i : start + 4 * i + 4]) for i in range(count))


def _format_sources(sources: tuple[bytes, ...]) -> str:
    return "[" + ", ".join(format_ip(s) for s in sources) + "]"


def _format_ds(ds: int) -> str:
    return f"{ds / 10:g}s"


# --------------------------------------------------------------------------- query


class IgmpQueryView:
    """Zero-copy view of a Membership Query (IGMPv1, v2 or v3)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpQueryView:
        """Validate ``buf``: the length must name a version (RFC 3376 §7.1),
        the sources of a v3 query must fit, and the group must be 0.0.0.0 or
        multicast. Bytes after the sources of a v3 query are ignored (§4.1.10)."""
        buf = memoryview(buf)
        _check_common(buf, (IGMP_MEMBERSHIP_QUERY,), verify_checksum)
        n = len(buf)
        # RFC 3376 §7.1: 8 bytes is v1/v2, >= 12 is v3, 9-11 must be ignored.
        if IGMP_MIN_LEN < n < IGMPV3_QUERY_MIN_LEN:
            raise _bad(Drop.IGMP_TRUNCATED, f"query of {n} bytes")
        group = buf[4:8]
        # RFC 3376 §4.1.3: 0.0.0.0 for a general query, else the group queried.
        if group != IPV4_ANY and not is_ipv4_multicast(group):
            raise _bad(Drop.IGMP_BAD_ADDRESS, f"query for {format_ip(group)}")
        if n >= IGMPV3_QUERY_MIN_LEN:
            count = (buf[10] << 8) | buf[11]
            if IGMPV3_QUERY_MIN_LEN + 4 * count > n:
                raise _bad(Drop.IGMP_TRUNCATED, f"{count} sources in {n} bytes")
        return cls(buf)

    @property
    def version(self) -> int:
        if len(self.buf) >= IGMPV3_QUERY_MIN_LEN:
            return 3
        return 2 if self.buf[1] else 1

    @property
    def max_resp_code(self) -> int:
        return self.buf[1]

    @property
    def checksum(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def max_resp_ds(self) -> int:
        """Tenths of a second: ``V1_MAX_RESP_DS`` for IGMPv1 (RFC 3376 §7.1),
        the raw field for IGMPv2 (RFC 2236 §2.2), decoded for IGMPv3 (§4.1.1)."""
        version = self.version
        if version == 1:
            return V1_MAX_RESP_DS
        code = self.buf[1]
        return code if version == 2 else decode_max_resp_code(code)

    @property
    def group(self) -> bytes:
        return bytes(self.buf[4:8])

    @property
    def s_flag(self) -> bool:
        """Suppress Router-Side Processing, RFC 3376 §4.1.5 (False before v3)."""
        return self.version == 3 and bool(self.buf[8] & 0x08)

    @property
    def qrv(self) -> int:
        """Querier's Robustness Variable, §4.1.6 (0 before v3)."""
        return self.buf[8] & 0x07 if self.version == 3 else 0

    @property
    def qqic(self) -> int:
        return self.buf[9] if self.version == 3 else 0

    @property
    def query_interval_s(self) -> int:
        """Seconds, decoded from QQIC (§4.1.7); 0 before v3."""
        return decode_qqic(self.qqic)

    @property
    def sources(self) -> tuple[bytes, ...]:
        if self.version != 3:
            return ()
        return _sources(self.buf, IGMPV3_QUERY_MIN_LEN, (self.buf[10] << 8) | self.buf[11])

    def fields(self) -> tuple:
        """(type, max_resp_code, checksum, group) for v1/v2, plus (flags
        byte, qqic, number_of_sources) for v3."""
        if self.version == 3:
            return _QUERY_V3.unpack_from(self.buf)
        return _SHORT.unpack_from(self.buf)

    def header(self) -> IgmpQuery:
        version = self.version
        if version != 3:
            return IgmpQuery(version, self.max_resp_ds, self.group)
        _, code, _, group, flags, qqic, _ = _QUERY_V3.unpack_from(self.buf)
        return IgmpQuery(
            3,
            decode_max_resp_code(code),
            group,
            s_flag=bool(flags & 0x08),
            qrv=flags & 0x07,
            qqic=qqic,
            sources=self.sources,
        )

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class IgmpQuery:
    """Membership Query. ``max_resp_ds`` is in tenths of a second (emit
    encodes it for the version: ignored and written 0 for v1, at most 255 for
    v2, rounded down to the §4.1.1 form for v3); ``group`` is 0.0.0.0 for a
    general query; ``qqic`` is the raw code (see ``encode_qqic``). The v3-only
    fields are ignored when ``version`` is 1 or 2."""

    version: int
    max_resp_ds: int
    group: bytes
    s_flag: bool = False
    qrv: int = 0  # 0..7
    qqic: int = 0
    sources: tuple[bytes, ...] = ()

    @property
    def length(self) -> int:
        if self.version == 3:
            return IGMPV3_QUERY_MIN_LEN + 4 * len(self.sources)
        return IGMP_MIN_LEN

    @property
    def max_resp_s(self) -> float:
        """Seconds."""
        return self.max_resp_ds / 10

    @property
    def query_interval_s(self) -> int:
        """Seconds, decoded from QQIC (RFC 3376 §4.1.7)."""
        return decode_qqic(self.qqic)

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpQuery:
        return IgmpQueryView.checked(buf, verify_checksum=verify_checksum).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the query, checksum computed, at ``offset``; returns the
        bytes written. An IGMPv2 query needs ``max_resp_ds`` >= 1 (0 would
        make it an IGMPv1 query, RFC 3376 §7.1): ValueError otherwise."""
        if self.version == 3:
            code = encode_max_resp_code(self.max_resp_ds)
            flags = (0x08 if self.s_flag else 0) | (self.qrv & 0x07)
            _QUERY_V3.pack_into(
                buf,
                offset,
                IGMP_MEMBERSHIP_QUERY,
                code,
                0,
                self.group,
                flags,
                self.qqic,
                len(self.sources),
            )
            pos = offset + IGMPV3_QUERY_MIN_LEN
            for source in self.sources:
                buf[pos : pos + 4] = source
                pos += 4
        elif self.version == 2:
            if self.max_resp_ds < 1:
                raise ValueError("an IGMPv2 query's Max Resp Time must be >= 1 (RFC 3376 §7.1)")
            code = min(self.max_resp_ds, 0xFF)
            _SHORT.pack_into(buf, offset, IGMP_MEMBERSHIP_QUERY, code, 0, self.group)
        else:
            # RFC 1112 appendix I: the field is unused, sent as zero.
            _SHORT.pack_into(buf, offset, IGMP_MEMBERSHIP_QUERY, 0, 0, self.group)
        n = self.length
        _set_checksum(buf, offset, n)
        return n

    def to_bytes(self) -> bytes:
        return message_bytes(self)

    def summary(self) -> str:
        group = "general" if self.group == IPV4_ANY else format_ip(self.group)
        text = f"IGMPv{self.version} query {group}"
        if self.version == 1:
            return text
        text += f" max resp {_format_ds(self.max_resp_ds)}"
        if self.version == 3:
            text += f"{' S' if self.s_flag else ''} qrv {self.qrv} qqi {self.query_interval_s}s"
            if self.sources:
                text += " sources " + _format_sources(self.sources)
        return text


# --------------------------------------------------------------------------- v3 report


@dataclass(slots=True)
class IgmpGroupRecord:
    """One group record of an IGMPv3 report, RFC 3376 §4.2.4. ``record_type``
    is an int so that unknown types (to be ignored, §4.2.12) survive parsing;
    compare it with ``IgmpRecordType``. ``aux`` is a multiple of 4 bytes."""

    record_type: int
    group: bytes
    sources: tuple[bytes, ...] = ()
    aux: bytes = b""

    @property
    def length(self) -> int:
        return IGMPV3_RECORD_MIN_LEN + 4 * len(self.sources) + len(self.aux)

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        if len(self.aux) % 4:
            raise ValueError("aux data must be a multiple of 4 bytes (RFC 3376 §4.2.6)")
        _RECORD.pack_into(
            buf, offset, self.record_type, len(self.aux) // 4, len(self.sources), self.group
        )
        pos = offset + IGMPV3_RECORD_MIN_LEN
        for source in self.sources:
            buf[pos : pos + 4] = source
            pos += 4
        buf[pos : pos + len(self.aux)] = self.aux
        return pos + len(self.aux) - offset

    def summary(self) -> str:
        try:
            kind = IgmpRecordType(self.record_type).name
        except ValueError:
            kind = f"type {self.record_type}"
        text = f"{kind} {format_ip(self.group)}"
        if self.sources:
            text += " " + _format_sources(self.sources)
        return text


def _iter_records(buf: memoryview) -> Iterator[IgmpGroupRecord]:
    count = (buf[6] << 8) | buf[7]
    pos, end = IGMPV3_REPORT_MIN_LEN, len(buf)
    for _ in range(count):
        if pos + IGMPV3_RECORD_MIN_LEN > end:
            raise _bad(Drop.IGMP_TRUNCATED, f"record at {pos} of {end} bytes")
        kind, aux_words, nsources, group = _RECORD.unpack_from(buf, pos)
        body = pos + IGMPV3_RECORD_MIN_LEN
        stop = body + 4 * nsources + 4 * aux_words
        if stop > end:
            raise _bad(Drop.IGMP_TRUNCATED, f"record of {stop - pos} bytes at {pos}")
        # RFC 3376 §4.2.8: the multicast address the record pertains to.
        if not is_ipv4_multicast(group):
            raise _bad(Drop.IGMP_BAD_RECORD, f"record for {format_ip(group)}")
        sources = _sources(buf, body, nsources)
        aux = bytes(buf[body + 4 * nsources : stop])
        yield IgmpGroupRecord(kind, group, sources, aux)
        pos = stop


class IgmpV3ReportView:
    """Zero-copy view of a Version 3 Membership Report."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpV3ReportView:
        """Validate ``buf``: every record announced by the count must fit and
        name a multicast group. Bytes after the last record are ignored
        (§4.2.11)."""
        buf = memoryview(buf)
        _check_common(buf, (IGMPV3_REPORT,), verify_checksum)
        for _ in _iter_records(buf):
            pass
        return cls(buf)

    @property
    def checksum(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def number_of_records(self) -> int:
        return (self.buf[6] << 8) | self.buf[7]

    def fields(self) -> tuple[int, int, int]:
        """(type, checksum, number_of_records)."""
        return _REPORT.unpack_from(self.buf)

    def records(self) -> Iterator[IgmpGroupRecord]:
        """The group records in wire order."""
        return _iter_records(self.buf)

    def header(self) -> IgmpV3Report:
        return IgmpV3Report(list(self.records()))

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class IgmpV3Report:
    """Version 3 Membership Report, RFC 3376 §4.2."""

    records: list[IgmpGroupRecord] = field(default_factory=list)

    @property
    def length(self) -> int:
        return IGMPV3_REPORT_MIN_LEN + sum(r.length for r in self.records)

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpV3Report:
        return IgmpV3ReportView.checked(buf, verify_checksum=verify_checksum).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the report, checksum computed, at ``offset``; returns the
        bytes written."""
        _REPORT.pack_into(buf, offset, IGMPV3_REPORT, 0, len(self.records))
        pos = offset + IGMPV3_REPORT_MIN_LEN
        for record in self.records:
            pos += record.emit(buf, pos)
        n = pos - offset
        _set_checksum(buf, offset, n)
        return n

    def to_bytes(self) -> bytes:
        return message_bytes(self)

    def summary(self) -> str:
        records = ", ".join(r.summary() for r in self.records)
        return f"IGMPv3 report {len(self.records)} record(s) [{records}]"


# --------------------------------------------------------------------------- v1/v2 report, leave

_V2_KINDS = (IGMPV1_REPORT, IGMPV2_REPORT, IGMPV2_LEAVE)
_V2_NAMES = {
    IGMPV1_REPORT: "IGMPv1 report",
    IGMPV2_REPORT: "IGMPv2 report",
    IGMPV2_LEAVE: "IGMPv2 leave",
}


class IgmpV2MessageView:
    """Zero-copy view of an IGMPv1 Report, IGMPv2 Report or Leave Group."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf  # unchecked: for our own output

    @classmethod
    def checked(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpV2MessageView:
        """Validate ``buf``: one of the three types, and a multicast group
        (RFC 2236 §2.4). Bytes after the 8th are ignored (RFC 2236 §2.5)."""
        buf = memoryview(buf)
        _check_common(buf, _V2_KINDS, verify_checksum)
        group = buf[4:8]
        if not is_ipv4_multicast(group):
            raise _bad(Drop.IGMP_BAD_ADDRESS, f"type {buf[0]:#04x} for {format_ip(group)}")
        return cls(buf)

    @property
    def type(self) -> int:
        return self.buf[0]

    @property
    def max_resp_ds(self) -> int:
        """The raw field: zero when sent, ignored on receipt (RFC 2236 §2.2)."""
        return self.buf[1]

    @property
    def checksum(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def group(self) -> bytes:
        return bytes(self.buf[4:8])

    def fields(self) -> tuple[int, int, int, bytes]:
        """(type, max_resp_code, checksum, group)."""
        return _SHORT.unpack_from(self.buf)

    def header(self) -> IgmpV2Message:
        kind, code, _, group = _SHORT.unpack_from(self.buf)
        return IgmpV2Message(kind, group, code)

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class IgmpV2Message:
    """IGMPv1 Report (0x12), IGMPv2 Report (0x16) or Leave Group (0x17):
    8 bytes, RFC 2236 §2. ``max_resp_ds`` is the raw, unused field."""

    type: int
    group: bytes
    max_resp_ds: int = 0

    @property
    def length(self) -> int:
        return IGMP_MIN_LEN

    @classmethod
    def parse(
        cls, buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True
    ) -> IgmpV2Message:
        return IgmpV2MessageView.checked(buf, verify_checksum=verify_checksum).header()

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the message, checksum computed, at ``offset``; returns 8."""
        _SHORT.pack_into(buf, offset, self.type, self.max_resp_ds, 0, self.group)
        _set_checksum(buf, offset, IGMP_MIN_LEN)
        return IGMP_MIN_LEN

    def to_bytes(self) -> bytes:
        return message_bytes(self)

    def summary(self) -> str:
        name = _V2_NAMES.get(self.type, f"IGMP type {self.type:#04x}")
        return f"{name} {format_ip(self.group)}"


# --------------------------------------------------------------------------- any message

IgmpMessage = IgmpQuery | IgmpV3Report | IgmpV2Message


class _Emitter(Protocol):
    @property
    def length(self) -> int: ...

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int: ...


def message_bytes(msg: _Emitter) -> bytes:
    """``msg`` (any of the three message classes) emitted into new bytes,
    checksum filled."""
    buf = bytearray(msg.length)
    msg.emit(buf)
    return bytes(buf)


def igmp_type(buf: bytes | bytearray | memoryview) -> int:
    """The message type (first byte) of an IGMP message of at least 8 bytes."""
    if len(buf) < IGMP_MIN_LEN:
        raise _bad(Drop.IGMP_TRUNCATED, f"{len(buf)} bytes")
    return buf[0]


def parse(buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True) -> IgmpMessage:
    """Any IGMP message this module knows to its dataclass, by type;
    ``IGMP_BAD_TYPE`` for the others (RFC 3376 §4: silently ignored)."""
    kind = igmp_type(buf)
    if kind == IGMP_MEMBERSHIP_QUERY:
        return IgmpQuery.parse(buf, verify_checksum=verify_checksum)
    if kind == IGMPV3_REPORT:
        return IgmpV3Report.parse(buf, verify_checksum=verify_checksum)
    if kind in _V2_KINDS:
        return IgmpV2Message.parse(buf, verify_checksum=verify_checksum)
    raise _bad(Drop.IGMP_BAD_TYPE, f"type {kind:#04x}")


def destination(msg: IgmpMessage) -> bytes:
    """The IPv4 destination a message is sent to: general queries to
    224.0.0.1 and group(-and-source)-specific ones to the group (RFC 3376
    §4.1.12), v3 reports to 224.0.0.22 (§4.2.14), v1/v2 reports to the group
    and Leave Group to 224.0.0.2 (RFC 2236 §3)."""
    if isinstance(msg, IgmpQuery):
        return ALL_SYSTEMS if msg.group == IPV4_ANY else msg.group
    if isinstance(msg, IgmpV3Report):
        return IGMPV3_ALL_ROUTERS
    return ALL_ROUTERS if msg.type == IGMPV2_LEAVE else msg.group
