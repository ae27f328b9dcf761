"""Multicast Listener Discovery: MLDv2 (RFC 3810) reports and MLDv1/v2 queries.

A message here is a whole ICMPv6 message, from its 4-byte type/code/checksum
header on. The checksum is verified with the IPv6 pseudo-header sum the caller
passes (None skips it), and the IP Hop Limit is checked when given: RFC 3810
§5.1.14 and §5.2.13 drop MLD messages whose Hop Limit is not 1.

* Multicast Listener Query (130), RFC 3810 §5.1: the version comes from the
  length (§8.1): 24 bytes is MLDv1 (RFC 2710 §3), 28 or more is MLDv2, anything
  else is ignored (``MLD_TRUNCATED``). Both forms can be parsed and emitted.
* Version 2 Multicast Listener Report (143), RFC 3810 §5.2: multicast address
  records with their sources and auxiliary data. Records of unknown type are
  kept (as their int): §5.2.12 says to ignore such a record, not the report.

The IP layer, not this module, must send every MLD message from a link-local
source (or :: before one exists, §5.2.13) with Hop Limit 1 and a Hop-by-Hop
Router Alert option with value 0 (RFC 2711 §2.1, RFC 3810 §5) — see
``ipv6.OPT_ROUTER_ALERT`` and ``ROUTER_ALERT_MLD`` — and check that option on
receipt. MLDv2 reports go to ``MLDV2_ALL_ROUTERS`` (ff02::16).

* MLDv1 Multicast Listener Report (131) and Done (132), RFC 2710 §3: 24
  bytes, the group in the Multicast Address field (``MldV1Message``), for
  the MLDv1 compatibility mode of RFC 3810 §8.2. A v1 report goes to the
  group itself, a Done to ``ALL_ROUTERS`` (ff02::2), RFC 2710 §4.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import checksum as csum
from ..addr import IPV6_ANY, format_ip, is_ipv6_multicast
from .errors import Drop, MalformedPacket
from .icmpv6 import (
    ICMPV6_MLD2_REPORT,
    ICMPV6_MLD_DONE,
    ICMPV6_MLD_QUERY,
    ICMPV6_MLD_REPORT,
    message_bytes,
    set_checksum,
)

MLD_HOP_LIMIT = 1  # RFC 3810 §5
ROUTER_ALERT_MLD = 0  # Router Alert value "MLD message", RFC 2711 §2.1
MLDV2_ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000016")  # ff02::16, RFC 3810 §5.2.14

MLDV1_QUERY_LEN = 24  # RFC 2710 §3
MLDV2_QUERY_MIN_LEN = 28  # RFC 3810 §5.1, §8.1
MLDV2_REPORT_MIN_LEN = 8  # RFC 3810 §5.2
MLDV2_RECORD_MIN_LEN = 20  # RFC 3810 §5.2.4

# Defaults of RFC 3810 §9 (for the machines; here for one source of truth).
DEFAULT_ROBUSTNESS = 2  # §9.1
DEFAULT_QUERY_INTERVAL_S = 125  # §9.2
DEFAULT_QUERY_RESPONSE_INTERVAL_MS = 10_000  # §9.3
UNSOLICITED_REPORT_INTERVAL_S = 1  # §9.11
V1_UNSOLICITED_REPORT_INTERVAL_S = 10  # RFC 2710 §7.10

_QUERY_V1 = struct.Struct("!BBHHxx16s")
_QUERY_V2 = struct.Struct("!BBHHxx16sBBH")
_REPORT = struct.Struct("!BxHxxH")
_RECORD = struct.Struct("!BBH16s")
_LAYER = "mld"


class MldRecordType(enum.IntEnum):
    """Multicast address record types, RFC 3810 §5.2.12."""

    MODE_IS_INCLUDE = 1
    MODE_IS_EXCLUDE = 2
    CHANGE_TO_INCLUDE_MODE = 3
    CHANGE_TO_EXCLUDE_MODE = 4
    ALLOW_NEW_SOURCES = 5
    BLOCK_OLD_SOURCES = 6


def decode_max_resp_code(code: int) -> int:
    """Maximum Response Code to Maximum Response Delay in ms, RFC 3810 §5.1.3."""
    if code < 0x8000:
        return code
    return ((code & 0x0FFF) | 0x1000) << (((code >> 12) & 0x7) + 3)


def encode_max_resp_code(delay_ms: int) -> int:
    """Maximum Response Delay (ms) to the code, rounding down; clamps to the
    largest representable delay (8,387,584 ms)."""
    if delay_ms < 0x8000:
        return delay_ms
    for exp in range(8):
        mant = (delay_ms >> (exp + 3)) - 0x1000
        if mant <= 0x0FFF:
            return 0x8000 | (exp << 12) | mant
    return 0xFFFF


def decode_qqic(qqic: int) -> int:
    """Querier's Query Interval Code to seconds, RFC 3810 §5.1.9."""
    if qqic < 0x80:
        return qqic
    return ((qqic & 0x0F) | 0x10) << (((qqic >> 4) & 0x7) + 3)


def encode_qqic(interval_s: int) -> int:
    """Query interval (s) to QQIC, rounding down; clamps to 31,744 s."""
    if interval_s < 0x80:
        return interval_s
    for exp in range(8):
        mant = (interval_s >> (exp + 3)) - 0x10
        if mant <= 0x0F:
            return 0x80 | (exp << 4) | mant
    return 0xFF


def _bad(reason: Drop, detail: str) -> MalformedPacket:
    return MalformedPacket(reason, detail, layer=_LAYER)


def _check_common(buf: memoryview, kind: int, pseudo: int | None, hop_limit: int | None) -> None:
    if len(buf) < 4:
        raise _bad(Drop.MLD_TRUNCATED, f"{len(buf)} bytes")
    if buf[0] != kind:
        raise _bad(Drop.MLD_BAD_TYPE, f"type {buf[0]}")
    if pseudo is not None and not csum.verify(buf, pseudo):
        raise MalformedPacket(Drop.ICMPV6_BAD_CHECKSUM, layer=_LAYER)
    if hop_limit is not None and hop_limit != MLD_HOP_LIMIT:
        raise _bad(Drop.MLD_BAD_HOP_LIMIT, f"hop limit {hop_limit}")


# --------------------------------------------------------------------------- query


class MldQueryView:
    """Zero-copy view of a Multicast Listener Query (MLDv1 or MLDv2)."""

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
    ) -> MldQueryView:
        buf = memoryview(buf)
        _check_common(buf, ICMPV6_MLD_QUERY, pseudo, hop_limit)
        n = len(buf)
        # RFC 3810 §8.1: 24 bytes is MLDv1, >= 28 is MLDv2, others are ignored.
        if n < MLDV1_QUERY_LEN or MLDV1_QUERY_LEN < n < MLDV2_QUERY_MIN_LEN:
            raise _bad(Drop.MLD_TRUNCATED, f"query of {n} bytes")
        group = buf[8:24]
        # §5.1.5: :: for a general query, else the multicast address queried.
        if group != IPV6_ANY and not is_ipv6_multicast(group):
            raise _bad(Drop.MLD_BAD_ADDRESS, f"query for {format_ip(group)}")
        if n >= MLDV2_QUERY_MIN_LEN:
            count = (buf[26] << 8) | buf[27]
            if MLDV2_QUERY_MIN_LEN + 16 * count > n:
                raise _bad(Drop.MLD_TRUNCATED, f"{count} sources in {n} bytes")
        return cls(buf)

    @property
    def version(self) -> int:
        return 1 if len(self.buf) == MLDV1_QUERY_LEN else 2

    @property
    def checksum(self) -> int:
        return (self.buf[2] << 8) | self.buf[3]

    @property
    def max_resp_code(self) -> int:
        return (self.buf[4] << 8) | self.buf[5]

    @property
    def max_resp_delay(self) -> int:
        """Milliseconds: the raw field for MLDv1 (RFC 2710 §3.4), decoded for
        MLDv2 (RFC 3810 §5.1.3)."""
        code = self.max_resp_code
        return code if self.version == 1 else decode_max_resp_code(code)

    @property
    def multicast_address(self) -> bytes:
        return bytes(self.buf[8:24])

    @property
    def s_flag(self) -> bool:
        """Suppress Router-Side Processing, RFC 3810 §5.1.7 (False for MLDv1)."""
        return self.version == 2 and bool(self.buf[24] & 0x08)

    @property
    def qrv(self) -> int:
        """Querier's Robustness Variable, §5.1.8 (0 for MLDv1)."""
        return self.buf[24] & 0x07 if self.version == 2 else 0

    @property
    def qqic(self) -> int:
        return self.buf[25] if self.version == 2 else 0

    @property
    def query_interval(self) -> int:
        """Seconds, decoded from QQIC (§5.1.9); 0 for MLDv1."""
        return decode_qqic(self.qqic)

    @property
    def sources(self) -> tuple[bytes, ...]:
        if self.version == 1:
            return ()
        count = (self.buf[26] << 8) | self.buf[27]
        return tuple(bytes(self.buf[28 + 16 * i : 44 + 16 * i]) for i in range(count))

    def fields(self) -> tuple:
        """(type, code, checksum, max_resp_code, multicast_address) for
        MLDv1, plus (flags byte, qqic, number_of_sources) for MLDv2."""
        if self.version == 1:
            return _QUERY_V1.unpack_from(self.buf)
        return _QUERY_V2.unpack_from(self.buf)

    def header(self) -> MldQuery:
        if self.version == 1:
            _, _, checksum, code, group = _QUERY_V1.unpack_from(self.buf)
            return MldQuery(code, group, version=1, checksum=checksum)
        _, _, checksum, code, group, flags, qqic, _ = _QUERY_V2.unpack_from(self.buf)
        return MldQuery(
            code,
            group,
            version=2,
            s_flag=bool(flags & 0x08),
            qrv=flags & 0x07,
            qqic=qqic,
            sources=self.sources,
            checksum=checksum,
        )

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class MldQuery:
    """Multicast Listener Query. ``max_resp_code`` is the raw field (use
    ``encode_max_resp_code``); ``multicast_address`` is :: for a general query.
    The MLDv2-only fields are ignored when ``version`` is 1."""

    max_resp_code: int
    multicast_address: bytes = IPV6_ANY
    version: int = 2
    s_flag: bool = False
    qrv: int = 0  # 0..7
    qqic: int = 0
    sources: tuple[bytes, ...] = ()
    checksum: int = 0

    @property
    def length(self) -> int:
        if self.version == 1:
            return MLDV1_QUERY_LEN
        return MLDV2_QUERY_MIN_LEN + 16 * len(self.sources)

    @property
    def max_resp_delay(self) -> int:
        """Milliseconds."""
        return self.max_resp_code if self.version == 1 else decode_max_resp_code(self.max_resp_code)

    @classmethod
    def parse(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        hop_limit: int | None = None,
    ) -> MldQuery:
        return MldQueryView.checked(buf, pseudo=pseudo, hop_limit=hop_limit).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        """Write the query at ``offset``; returns the bytes written. With
        ``pseudo`` the checksum is computed (and kept in ``self.checksum``)."""
        check = 0 if pseudo is not None else self.checksum
        if self.version == 1:
            _QUERY_V1.pack_into(
                buf, offset, ICMPV6_MLD_QUERY, 0, check, self.max_resp_code, self.multicast_address
            )
        else:
            flags = (0x08 if self.s_flag else 0) | (self.qrv & 0x07)
            _QUERY_V2.pack_into(
                buf,
                offset,
                ICMPV6_MLD_QUERY,
                0,
                check,
                self.max_resp_code,
                self.multicast_address,
                flags,
                self.qqic,
                len(self.sources),
            )
            for i, source in enumerate(self.sources):
                start = offset + MLDV2_QUERY_MIN_LEN + 16 * i
                buf[start : start + 16] = source
        n = self.length
        if pseudo is not None:
            self.checksum = set_checksum(buf, offset, n, pseudo)
        return n

    def to_bytes(self, src: bytes | None = None, dst: bytes | None = None) -> bytes:
        """The query as new bytes; with the IPv6 ``src`` and ``dst``, checksummed."""
        return message_bytes(self, src, dst)

    def summary(self) -> str:
        group = (
            "general" if self.multicast_address == IPV6_ANY else format_ip(self.multicast_address)
        )
        text = f"MLDv{self.version} query {group} max resp {self.max_resp_delay}ms"
        if self.version == 2:
            text += f"{' S' if self.s_flag else ''} qrv {self.qrv} qqi {decode_qqic(self.qqic)}s"
            if self.sources:
                text += " sources [" + ", ".join(format_ip(s) for s in self.sources) + "]"
        return text


# --------------------------------------------------------------------------- report


@dataclass(slots=True)
class MulticastAddressRecord:
    """One record of an MLDv2 report, RFC 3810 §5.2.4. ``record_type`` is an
    int so that unknown types (to be ignored, §5.2.12) survive parsing; compare
    it with ``MldRecordType``. ``aux_data`` is a multiple of 4 bytes."""

    record_type: int
    multicast_address: bytes
    sources: tuple[bytes, ...] = ()
    aux_data: bytes = b""

    @property
    def length(self) -> int:
        return MLDV2_RECORD_MIN_LEN + 16 * len(self.sources) + len(self.aux_data)

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        if len(self.aux_data) % 4:
            raise ValueError("aux data must be a multiple of 4 bytes (RFC 3810 §5.2.6)")
        _RECORD.pack_into(
            buf,
            offset,
            self.record_type,
            len(self.aux_data) // 4,
            len(self.sources),
            self.multicast_address,
        )
        pos = offset + MLDV2_RECORD_MIN_LEN
        for source in self.sources:
            buf[pos : pos + 16] = source
            pos += 16
        buf[pos : pos + len(self.aux_data)] = self.aux_data
        return pos + len(self.aux_data) - offset

    def summary(self) -> str:
        try:
            kind = MldRecordType(self.record_type).name
        except ValueError:
            kind = f"type {self.record_type}"
        text = f"{kind} {format_ip(self.multicast_address)}"
        if self.sources:
            text += " [" + ", ".join(format_ip(s) for s in self.sources) + "]"
        return text


def _iter_records(buf: memoryview) -> Iterator[MulticastAddressRecord]:
    count = (buf[6] << 8) | buf[7]
    pos, end = MLDV2_REPORT_MIN_LEN, len(buf)
    for _ in range(count):
        if pos + MLDV2_RECORD_MIN_LEN > end:
            raise _bad(Drop.MLD_TRUNCATED, f"record at {pos} of {end} bytes")
        kind, aux_words, nsources, group = _RECORD.unpack_from(buf, pos)
        body = pos + MLDV2_RECORD_MIN_LEN
        stop = body + 16 * nsources + 4 * aux_words
        if stop > end:
            raise _bad(Drop.MLD_TRUNCATED, f"record of {stop - pos} bytes at {pos}")
        if not is_ipv6_multicast(group):
            raise _bad(Drop.MLD_BAD_RECORD, f"record for {format_ip(group)}")
        sources = tuple(bytes(buf[body + 16 * i : body + 16 * i + 16]) for i in range(nsources))
        aux = bytes(buf[body + 16 * nsources : stop])
        yield MulticastAddressRecord(kind, group, sources, aux)
        pos = stop


class MldReportView:
    """Zero-copy view of a Version 2 Multicast Listener Report."""

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
    ) -> MldReportView:
        """Validate ``buf``: every record announced by the count must fit, and
        name a multicast address. Bytes after the last record are ignored."""
        buf = memoryview(buf)
        _check_common(buf, ICMPV6_MLD2_REPORT, pseudo, hop_limit)
        if len(buf) < MLDV2_REPORT_MIN_LEN:
            raise _bad(Drop.MLD_TRUNCATED, f"report of {len(buf)} bytes")
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

    def records(self) -> Iterator[MulticastAddressRecord]:
        """The records in wire order."""
        return _iter_records(self.buf)

    def header(self) -> MldReport:
        return MldReport(list(self.records()), self.checksum)

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class MldReport:
    """Version 2 Multicast Listener Report, RFC 3810 §5.2."""

    records: list[MulticastAddressRecord] = field(default_factory=list)
    checksum: int = 0

    @property
    def length(self) -> int:
        return MLDV2_REPORT_MIN_LEN + sum(r.length for r in self.records)

    @classmethod
    def parse(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        hop_limit: int | None = None,
    ) -> MldReport:
        return MldReportView.checked(buf, pseudo=pseudo, hop_limit=hop_limit).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        """Write the report at ``offset``; returns the bytes written. With
        ``pseudo`` the checksum is computed (and kept in ``self.checksum``)."""
        check = 0 if pseudo is not None else self.checksum
        _REPORT.pack_into(buf, offset, ICMPV6_MLD2_REPORT, check, len(self.records))
        pos = offset + MLDV2_REPORT_MIN_LEN
        for record in self.records:
            pos += record.emit(buf, pos)
        n = pos - offset
        if pseudo is not None:
            self.checksum = set_checksum(buf, offset, n, pseudo)
        return n

    def to_bytes(self, src: bytes | None = None, dst: bytes | None = None) -> bytes:
        """The report as new bytes; with the IPv6 ``src`` and ``dst``, checksummed."""
        return message_bytes(self, src, dst)

    def summary(self) -> str:
        records = ", ".join(r.summary() for r in self.records)
        return f"MLDv2 report {len(self.records)} record(s) [{records}]"


# --------------------------------------------------------------------------- MLDv1 report, done


class MldV1MessageView:
    """Zero-copy view of an MLDv1 Report (131) or Done (132), RFC 2710 §3."""

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
    ) -> MldV1MessageView:
        buf = memoryview(buf)
        kind = buf[0] if len(buf) else ICMPV6_MLD_REPORT
        if kind not in (ICMPV6_MLD_REPORT, ICMPV6_MLD_DONE):
            raise _bad(Drop.MLD_BAD_TYPE, f"type {kind}")
        _check_common(buf, kind, pseudo, hop_limit)
        if len(buf) < MLDV1_QUERY_LEN:  # RFC 2710 §3: every message is 24 bytes
            raise _bad(Drop.MLD_TRUNCATED, f"{len(buf)} bytes")
        if not is_ipv6_multicast(buf[8:24]):
            raise _bad(Drop.MLD_BAD_ADDRESS, format_ip(bytes(buf[8:24])))
        return cls(buf)

    @property
    def type(self) -> int:
        return self.buf[0]

    @property
    def multicast_address(self) -> bytes:
        return bytes(self.buf[8:24])

    def header(self) -> MldV1Message:
        kind, _, check, delay, group = _QUERY_V1.unpack_from(self.buf)
        return MldV1Message(kind, group, delay, check)

    def summary(self) -> str:
        return self.header().summary()


@dataclass(slots=True)
class MldV1Message:
    """MLDv1 Report (``ICMPV6_MLD_REPORT``) or Done (``ICMPV6_MLD_DONE``)."""

    type: int
    multicast_address: bytes
    max_resp_delay: int = 0  # always 0 when sent (RFC 2710 §3.4)
    checksum: int = 0

    length = MLDV1_QUERY_LEN

    @classmethod
    def parse(
        cls,
        buf: bytes | bytearray | memoryview,
        *,
        pseudo: int | None = None,
        hop_limit: int | None = None,
    ) -> MldV1Message:
        return MldV1MessageView.checked(buf, pseudo=pseudo, hop_limit=hop_limit).header()

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, pseudo: int | None = None
    ) -> int:
        check = 0 if pseudo is not None else self.checksum
        _QUERY_V1.pack_into(
            buf, offset, self.type, 0, check, self.max_resp_delay, self.multicast_address
        )
        if pseudo is not None:
            self.checksum = set_checksum(buf, offset, MLDV1_QUERY_LEN, pseudo)
        return MLDV1_QUERY_LEN

    def to_bytes(self, src: bytes | None = None, dst: bytes | None = None) -> bytes:
        return message_bytes(self, src, dst)

    def summary(self) -> str:
        kind = "report" if self.type == ICMPV6_MLD_REPORT else "done"
        return f"MLDv1 {kind} {format_ip(self.multicast_address)}"


def parse(
    buf: bytes | bytearray | memoryview, *, pseudo: int | None = None, hop_limit: int | None = None
) -> MldQuery | MldReport | MldV1Message:
    """A query, an MLDv2 report or an MLDv1 report/done to its dataclass, by type."""
    if len(buf) >= 1 and buf[0] == ICMPV6_MLD2_REPORT:
        return MldReport.parse(buf, pseudo=pseudo, hop_limit=hop_limit)
    if len(buf) >= 1 and buf[0] in (ICMPV6_MLD_REPORT, ICMPV6_MLD_DONE):
        return MldV1Message.parse(buf, pseudo=pseudo, hop_limit=hop_limit)
    return MldQuery.parse(buf, pseudo=pseudo, hop_limit=hop_limit)
