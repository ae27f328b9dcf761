"""IGMP codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.igmp import (
    IGMP_MQ,
    IGMP_MR,
    IGMPv2_LG,
    IGMPv2_MR,
    IGMPv3_MQ,
    IGMPv3_MR,
    IGMPv3_MR_Group,
)
from scapy.layers.inet import IP, IPOption_Router_Alert

from shardnet.common import checksum as csum
from shardnet.common.addr import format_ip, parse_ip
from shardnet.common.wire import igmp
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.igmp import (
    IgmpGroupRecord,
    IgmpQuery,
    IgmpQueryView,
    IgmpRecordType,
    IgmpV2Message,
    IgmpV2MessageView,
    IgmpV3Report,
    IgmpV3ReportView,
)
from shardnet.common.wire.ipv4 import IPPROTO_IGMP

from .helpers import assert_drop, behind_ip, ip_payload, scapy_checksum

SRC = "198.18.0.1"
GROUP1, GROUP2 = parse_ip("234.198.18.1"), parse_ip("234.198.18.2")
S5, S10, S11 = parse_ip("198.18.0.5"), parse_ip("198.18.0.10"), parse_ip("198.18.0.11")
GENERAL = bytes(4)

# From scapy (scapy.layers.igmp), the IP payload of IP(src="198.18.0.1") / ...:
# IGMPv3_MR(records=[IGMPv3_MR_Group(rtype=2, maddr="234.198.18.1"),
#   IGMPv3_MR_Group(rtype=5, maddr="234.198.18.2", srcaddrs=["198.18.0.10", "198.18.0.11"])])
GOLDEN_V3_REPORT = bytes.fromhex("220051300000000202000000eac6120105000002eac61202c612000ac612000b")
# IGMPv3_MQ(mrcode=100, gaddr="234.198.18.2", s=1, qrv=2, qqic=125, srcaddrs=["198.18.0.5"])
GOLDEN_V3_QUERY = bytes.fromhex("1164213deac612020a7d0001c6120005")
GOLDEN_V2_QUERY = bytes.fromhex("1164ee9b00000000")  # IGMP_MQ(mrcode=100)
GOLDEN_V1_QUERY = bytes.fromhex("1100eeff00000000")  # IGMP_MQ(mrcode=0)
GOLDEN_V2_REPORT = bytes.fromhex("1600ed37eac61201")  # IGMPv2_MR(gaddr="234.198.18.1")
GOLDEN_V1_REPORT = bytes.fromhex("1200f137eac61201")  # IGMP_MR(gaddr="234.198.18.1")
GOLDEN_LEAVE = bytes.fromhex("1700ec37eac61201")  # IGMPv2_LG(gaddr="234.198.18.1")

V3_REPORT = IgmpV3Report(
    [
        IgmpGroupRecord(IgmpRecordType.MODE_IS_EXCLUDE, GROUP1),
        IgmpGroupRecord(IgmpRecordType.ALLOW_NEW_SOURCES, GROUP2, (S10, S11)),
    ]
)
V3_QUERY = IgmpQuery(3, 100, GROUP2, s_flag=True, qrv=2, qqic=125, sources=(S5,))
V2_QUERY = IgmpQuery(2, 100, GENERAL)
V1_QUERY = IgmpQuery(1, igmp.V1_MAX_RESP_DS, GENERAL)
V2_REPORT = IgmpV2Message(igmp.IGMPV2_REPORT, GROUP1)
V1_REPORT = IgmpV2Message(igmp.IGMPV1_REPORT, GROUP1)
LEAVE = IgmpV2Message(igmp.IGMPV2_LEAVE, GROUP1)

CASES = [
    (GOLDEN_V3_REPORT, V3_REPORT),
    (GOLDEN_V3_QUERY, V3_QUERY),
    (GOLDEN_V2_QUERY, V2_QUERY),
    (GOLDEN_V1_QUERY, V1_QUERY),
    (GOLDEN_V2_REPORT, V2_REPORT),
    (GOLDEN_V1_REPORT, V1_REPORT),
    (GOLDEN_LEAVE, LEAVE),
]
IDS = ["v3-report", "v3-query", "v2-query", "v1-query", "v2-report", "v1-report", "leave"]


def fix(data: bytes) -> bytes:
    """``data`` with its IGMP checksum recomputed (to reach the later checks)."""
    buf = bytearray(data)
    buf[2:4] = b"\0\0"
    buf[2:4] = csum.checksum(buf).to_bytes(2, "big")
    return bytes(buf)


# --------------------------------------------------------------------------- golden


def test_deconstruct_v3_report() -> None:
    v = IgmpV3ReportView.checked(GOLDEN_V3_REPORT)
    assert v.fields() == (0x22, 0x5130, 2)
    assert (v.checksum, v.number_of_records) == (0x5130, 2)
    records = list(v.records())
    assert [(r.record_type, r.group) for r in records] == [(2, GROUP1), (5, GROUP2)]
    assert records[1].sources == (S10, S11)
    assert records[0].aux == b""


def test_deconstruct_v3_query() -> None:
    v = IgmpQueryView.checked(GOLDEN_V3_QUERY)
    assert v.version == 3
    assert v.fields() == (0x11, 100, 0x213D, GROUP2, 0x0A, 125, 1)
    assert (v.max_resp_code, v.max_resp_ds, v.group, v.checksum) == (100, 100, GROUP2, 0x213D)
    assert (v.s_flag, v.qrv, v.qqic, v.query_interval_s, v.sources) == (True, 2, 125, 125, (S5,))


@pytest.mark.parametrize(
    ("golden", "version", "code", "ds"),
    [(GOLDEN_V2_QUERY, 2, 100, 100), (GOLDEN_V1_QUERY, 1, 0, igmp.V1_MAX_RESP_DS)],
    ids=["v2", "v1"],
)
def test_deconstruct_short_query(golden: bytes, version: int, code: int, ds: int) -> None:
    """RFC 3376 §7.1: 8 bytes and code 0 is IGMPv1, non-zero is IGMPv2."""
    v = IgmpQueryView.checked(golden)
    assert v.version == version
    assert v.fields() == (0x11, code, int.from_bytes(golden[2:4], "big"), GENERAL)
    assert (v.max_resp_code, v.max_resp_ds, v.group) == (code, ds, GENERAL)
    assert (v.s_flag, v.qrv, v.qqic, v.query_interval_s, v.sources) == (False, 0, 0, 0, ())


@pytest.mark.parametrize(
    ("golden", "kind"),
    [(GOLDEN_V2_REPORT, 0x16), (GOLDEN_V1_REPORT, 0x12), (GOLDEN_LEAVE, 0x17)],
    ids=["v2-report", "v1-report", "leave"],
)
def test_deconstruct_v2_message(golden: bytes, kind: int) -> None:
    v = IgmpV2MessageView.checked(golden)
    check = int.from_bytes(golden[2:4], "big")
    assert v.fields() == (kind, 0, check, GROUP1)
    assert (v.type, v.max_resp_ds, v.checksum, v.group) == (kind, 0, check, GROUP1)


@pytest.mark.parametrize(("golden", "msg"), CASES, ids=IDS)
def test_construct(golden: bytes, msg: igmp.IgmpMessage) -> None:
    buf = bytearray(msg.length)
    assert msg.emit(buf) == len(golden)
    assert bytes(buf) == golden
    assert igmp.message_bytes(msg) == golden
    assert msg.to_bytes() == golden


@pytest.mark.parametrize(("golden", "msg"), CASES, ids=IDS)
def test_parse(golden: bytes, msg: igmp.IgmpMessage) -> None:
    assert igmp.parse(golden) == msg
    assert type(msg).parse(golden) == msg
    assert igmp.igmp_type(golden) == golden[0]


@pytest.mark.parametrize(("golden", "msg"), CASES, ids=IDS)
def test_emit(golden: bytes, msg: igmp.IgmpMessage) -> None:
    """At an offset, over a dirty buffer: the checksum is computed from zero."""
    buf = bytearray(b"\xaa" * (len(golden) + 7))
    assert msg.emit(buf, 5) == len(golden)
    assert bytes(buf[5 : 5 + len(golden)]) == golden
    assert buf[:5] == b"\xaa" * 5 and buf[5 + len(golden) :] == b"\xaa\xaa"


# --------------------------------------------------------------------------- semantics


def test_query_versions_by_length_and_code() -> None:
    """RFC 3376 §7.1; a v3 query with code 0 stays v3."""
    assert IgmpQuery.parse(fix(b"\x11\x00\x00\x00" + GROUP1)) == IgmpQuery(1, 100, GROUP1)
    assert IgmpQuery.parse(fix(b"\x11\x01\x00\x00" + GROUP1)) == IgmpQuery(2, 1, GROUP1)
    assert IgmpQuery.parse(fix(b"\x11\x00\x00\x00" + GROUP1 + bytes(4))) == IgmpQuery(3, 0, GROUP1)


def test_v1_query_emits_zero_and_v2_query_needs_a_time() -> None:
    assert IgmpQuery(1, 55, GENERAL).to_bytes() == GOLDEN_V1_QUERY
    assert IgmpQuery(2, 1000, GENERAL).to_bytes()[1] == 0xFF  # clamped to the 8-bit field
    with pytest.raises(ValueError):
        IgmpQuery(2, 0, GENERAL).to_bytes()  # would be an IGMPv1 query


def test_v3_query_encodes_max_resp() -> None:
    q = IgmpQuery(3, 1000, GENERAL)
    data = q.to_bytes()
    assert data[1] == igmp.encode_max_resp_code(1000) == 0xAF  # (0xF | 0x10) << (2 + 3) = 992
    assert IgmpQuery.parse(data).max_resp_ds == 992
    assert q.max_resp_s == 100.0 and V3_QUERY.max_resp_s == 10.0


def test_trailing_bytes() -> None:
    """RFC 2236 §2.5 and RFC 3376 §4.1.10, §4.2.11: bytes past the message
    are ignored but the checksum covers the whole IP payload."""
    for golden, msg in [(GOLDEN_V2_REPORT, V2_REPORT), (GOLDEN_V3_QUERY, V3_QUERY)]:
        assert igmp.parse(fix(golden + b"\x01\x02\x03\x04")) == msg
        assert_drop(Drop.IGMP_BAD_CHECKSUM, "igmp", igmp.parse, golden + b"\x01\x02\x03\x04")
    assert igmp.parse(fix(GOLDEN_V3_REPORT + bytes(4))) == V3_REPORT


def test_verify_checksum_off() -> None:
    data = GOLDEN_LEAVE[:2] + b"\0\0" + GOLDEN_LEAVE[4:]
    assert igmp.parse(data, verify_checksum=False) == LEAVE
    assert IgmpV2MessageView.checked(data, verify_checksum=False).checksum == 0


def test_unknown_record_type_is_kept() -> None:
    """RFC 3376 §4.2.12: an unrecognized record is ignored, not the report."""
    report = IgmpV3Report([IgmpGroupRecord(9, GROUP1), IgmpGroupRecord(1, GROUP2, (S5,))])
    assert IgmpV3Report.parse(report.to_bytes()).records[0].record_type == 9
    assert report.summary() == (
        "IGMPv3 report 2 record(s) [type 9 234.198.18.1, MODE_IS_INCLUDE 234.198.18.2 [198.18.0.5]]"
    )


def test_aux_data() -> None:
    rec = IgmpGroupRecord(IgmpRecordType.MODE_IS_INCLUDE, GROUP1, (S5,), b"abcdefgh")
    data = IgmpV3Report([rec]).to_bytes()
    assert data[9] == 2  # Aux Data Len in 32-bit words, RFC 3376 §4.2.6
    assert data[-8:] == b"abcdefgh"
    assert IgmpV3Report.parse(data).records == [rec]
    with pytest.raises(ValueError):
        IgmpGroupRecord(1, GROUP1, (), b"abc").emit(bytearray(16))


def test_summaries() -> None:
    assert V3_REPORT.summary() == (
        "IGMPv3 report 2 record(s) [MODE_IS_EXCLUDE 234.198.18.1,"
        " ALLOW_NEW_SOURCES 234.198.18.2 [198.18.0.10, 198.18.0.11]]"
    )
    assert IgmpQueryView.checked(GOLDEN_V3_QUERY).summary() == (
        "IGMPv3 query 234.198.18.2 max resp 10s S qrv 2 qqi 125s sources [198.18.0.5]"
    )
    assert V2_QUERY.summary() == "IGMPv2 query general max resp 10s"
    assert IgmpQuery(2, 25, GROUP1).summary() == "IGMPv2 query 234.198.18.1 max resp 2.5s"
    assert V1_QUERY.summary() == "IGMPv1 query general"
    assert IgmpV3ReportView.checked(GOLDEN_V3_REPORT).summary() == V3_REPORT.summary()
    assert IgmpV2MessageView.checked(GOLDEN_V2_REPORT).summary() == "IGMPv2 report 234.198.18.1"
    assert V1_REPORT.summary() == "IGMPv1 report 234.198.18.1"
    assert LEAVE.summary() == "IGMPv2 leave 234.198.18.1"


def test_destination() -> None:
    """RFC 3376 §4.1.12, §4.2.14; RFC 2236 §3."""
    assert igmp.destination(V2_QUERY) == igmp.ALL_SYSTEMS
    assert igmp.destination(V3_QUERY) == GROUP2
    assert igmp.destination(V3_REPORT) == igmp.IGMPV3_ALL_ROUTERS
    assert igmp.destination(V2_REPORT) == GROUP1
    assert igmp.destination(V1_REPORT) == GROUP1
    assert igmp.destination(LEAVE) == igmp.ALL_ROUTERS


@pytest.mark.parametrize(
    ("code", "ds"),
    [(0, 0), (100, 100), (127, 127), (0x80, 128), (0x8F, 248), (0x90, 256), (0xFF, 31744)],
)
def test_max_resp_code(code: int, ds: int) -> None:
    """RFC 3376 §4.1.1 floating-point form."""
    assert igmp.decode_max_resp_code(code) == ds
    assert igmp.encode_max_resp_code(ds) == code


@pytest.mark.parametrize(
    ("code", "s"), [(0, 0), (125, 125), (127, 127), (0x80, 128), (0xFF, 31744)]
)
def test_qqic(code: int, s: int) -> None:
    """RFC 3376 §4.1.7."""
    assert igmp.decode_qqic(code) == s
    assert igmp.encode_qqic(s) == code


@given(st.integers(0, 100_000))
def test_max_resp_code_rounds_down(ds: int) -> None:
    code = igmp.encode_max_resp_code(ds)
    got = igmp.decode_max_resp_code(code)
    assert 0 <= code <= 0xFF and got <= ds
    assert ds >= 31744 or got * 17 >= ds * 16  # within one mantissa step
    assert igmp.decode_qqic(igmp.encode_qqic(ds)) == got


@given(st.integers(0, 31744))
def test_max_resp_code_matches_scapy(ds: int) -> None:
    assert bytes(IGMPv3_MQ(mrcode=ds))[1] == igmp.encode_max_resp_code(ds)


def test_constants() -> None:
    assert (igmp.IGMP_MEMBERSHIP_QUERY, igmp.IGMPV1_REPORT, igmp.IGMPV2_REPORT) == (
        0x11,
        0x12,
        0x16,
    )
    assert (igmp.IGMPV2_LEAVE, igmp.IGMPV3_REPORT, IPPROTO_IGMP) == (0x17, 0x22, 2)
    assert igmp.ALL_SYSTEMS == parse_ip("224.0.0.1")
    assert igmp.ALL_ROUTERS == parse_ip("224.0.0.2")
    assert igmp.IGMPV3_ALL_ROUTERS == parse_ip("224.0.0.22")
    assert (igmp.IGMP_TTL, igmp.IGMP_TOS) == (1, 0xC0)
    assert igmp.ROUTER_ALERT_OPTION == bytes(IPOption_Router_Alert())
    assert (igmp.DEFAULT_ROBUSTNESS, igmp.DEFAULT_QUERY_INTERVAL_S) == (2, 125)
    assert igmp.DEFAULT_QUERY_RESPONSE_INTERVAL_DS == 100
    assert (igmp.UNSOLICITED_REPORT_INTERVAL_S, igmp.V2_UNSOLICITED_REPORT_INTERVAL_S) == (1, 10)
    assert igmp.V1_MAX_RESP_DS == 100
    assert [int(t) for t in IgmpRecordType] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------- drops

UNICAST = parse_ip("198.18.0.9")

QUERY_DROPS: list[tuple[str, bytes, Drop]] = [
    ("short", GOLDEN_V2_QUERY[:7], Drop.IGMP_TRUNCATED),
    ("empty", b"", Drop.IGMP_TRUNCATED),
    ("not-query", GOLDEN_V2_REPORT, Drop.IGMP_BAD_TYPE),
    ("checksum", GOLDEN_V2_QUERY[:-1] + b"\x01", Drop.IGMP_BAD_CHECKSUM),
    ("length-9", fix(GOLDEN_V3_QUERY[:9]), Drop.IGMP_TRUNCATED),  # RFC 3376 §7.1
    ("length-11", fix(GOLDEN_V3_QUERY[:11]), Drop.IGMP_TRUNCATED),
    ("sources-cut", fix(GOLDEN_V3_QUERY[:-1]), Drop.IGMP_TRUNCATED),
    ("sources-count", fix(GOLDEN_V3_QUERY[:11] + b"\x02" + S5), Drop.IGMP_TRUNCATED),
    ("unicast-group", fix(GOLDEN_V2_QUERY[:4] + UNICAST), Drop.IGMP_BAD_ADDRESS),
    (
        "v3-unicast-group",
        fix(GOLDEN_V3_QUERY[:4] + UNICAST + GOLDEN_V3_QUERY[8:]),
        Drop.IGMP_BAD_ADDRESS,
    ),
]
REPORT_DROPS: list[tuple[str, bytes, Drop]] = [
    ("short", GOLDEN_V3_REPORT[:7], Drop.IGMP_TRUNCATED),
    ("not-report", GOLDEN_V2_QUERY, Drop.IGMP_BAD_TYPE),
    ("checksum", GOLDEN_V3_REPORT[:-1] + b"\x0c", Drop.IGMP_BAD_CHECKSUM),
    ("record-header-cut", fix(GOLDEN_V3_REPORT[:15]), Drop.IGMP_TRUNCATED),
    (
        "records-count-too-big",
        fix(GOLDEN_V3_REPORT[:7] + b"\x03" + GOLDEN_V3_REPORT[8:]),
        Drop.IGMP_TRUNCATED,
    ),
    ("sources-cut", fix(GOLDEN_V3_REPORT[:-1]), Drop.IGMP_TRUNCATED),
    (
        "aux-past-end",
        fix(GOLDEN_V3_REPORT[:17] + b"\x01" + GOLDEN_V3_REPORT[18:]),
        Drop.IGMP_TRUNCATED,
    ),
    (
        "record-not-multicast",
        fix(GOLDEN_V3_REPORT[:12] + UNICAST + GOLDEN_V3_REPORT[16:]),
        Drop.IGMP_BAD_RECORD,
    ),
    (
        "record-zero-group",
        fix(GOLDEN_V3_REPORT[:20] + GENERAL + GOLDEN_V3_REPORT[24:]),
        Drop.IGMP_BAD_RECORD,
    ),
]
V2_DROPS: list[tuple[str, bytes, Drop]] = [
    ("short", GOLDEN_LEAVE[:7], Drop.IGMP_TRUNCATED),
    ("query", GOLDEN_V2_QUERY, Drop.IGMP_BAD_TYPE),
    ("v3-report", GOLDEN_V3_REPORT, Drop.IGMP_BAD_TYPE),
    ("checksum", GOLDEN_V2_REPORT[:-1] + b"\x02", Drop.IGMP_BAD_CHECKSUM),
    ("unicast-group", fix(GOLDEN_V1_REPORT[:4] + UNICAST), Drop.IGMP_BAD_ADDRESS),
    ("leave-zero-group", fix(GOLDEN_LEAVE[:4] + GENERAL), Drop.IGMP_BAD_ADDRESS),
]
PARSE_DROPS: list[tuple[str, bytes, Drop]] = [
    ("short", GOLDEN_LEAVE[:7], Drop.IGMP_TRUNCATED),
    ("mrd-advertisement", fix(b"\x30\x14\x00\x00\x00\x7d\x00\x02"), Drop.IGMP_BAD_TYPE),  # RFC 4286
    ("dvmrp", fix(b"\x13\x00\x00\x00" + bytes(4)), Drop.IGMP_BAD_TYPE),
]


@pytest.mark.parametrize(
    ("data", "reason"), [d[1:] for d in QUERY_DROPS], ids=[d[0] for d in QUERY_DROPS]
)
def test_query_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "igmp", IgmpQueryView.checked, data)


@pytest.mark.parametrize(
    ("data", "reason"), [d[1:] for d in REPORT_DROPS], ids=[d[0] for d in REPORT_DROPS]
)
def test_report_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "igmp", IgmpV3ReportView.checked, data)


@pytest.mark.parametrize(
    ("data", "reason"), [d[1:] for d in V2_DROPS], ids=[d[0] for d in V2_DROPS]
)
def test_v2_message_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "igmp", IgmpV2MessageView.checked, data)


# Through parse(): every drop above except a type the view does not take
# (which parse() dispatches to its own class), and the types none takes.
ANY_DROPS = PARSE_DROPS + [
    (f"{kind}-{name}", data, reason)
    for kind, drops in (("query", QUERY_DROPS), ("report", REPORT_DROPS), ("v2", V2_DROPS))
    for name, data, reason in drops
    if reason is not Drop.IGMP_BAD_TYPE
]


@pytest.mark.parametrize(
    ("data", "reason"), [d[1:] for d in ANY_DROPS], ids=[d[0] for d in ANY_DROPS]
)
def test_parse_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "igmp", igmp.parse, data)


def test_igmp_type_short() -> None:
    assert_drop(Drop.IGMP_TRUNCATED, "igmp", igmp.igmp_type, b"\x11\x64\xee\x9b")


# --------------------------------------------------------------------------- scapy oracle


def scapy_bytes(layer, dst: str) -> bytes:  # noqa: ANN001
    return ip_payload(IP(src=SRC, dst=dst, ttl=1) / layer)


def test_scapy_built_v3_report_parses() -> None:
    records = [
        IGMPv3_MR_Group(
            rtype=t, maddr=f"234.198.18.{t}", srcaddrs=[f"198.18.1.{i}" for i in range(t)]
        )
        for t in range(1, 7)
    ]
    data = scapy_bytes(IGMPv3_MR(records=records), "224.0.0.22")
    r = igmp.parse(data)
    assert isinstance(r, IgmpV3Report)
    assert [(x.record_type, x.group, len(x.sources)) for x in r.records] == [
        (t, parse_ip(f"234.198.18.{t}"), t) for t in range(1, 7)
    ]
    assert r.records[5].sources[5] == parse_ip("198.18.1.5")


def test_scapy_built_queries_parse() -> None:
    data = scapy_bytes(IGMPv3_MQ(mrcode=31744, qrv=7, qqic=0xFF, s=0), "224.0.0.1")
    q = igmp.parse(data)
    assert isinstance(q, IgmpQuery)
    assert (q.version, q.max_resp_ds, q.qrv, q.qqic, q.s_flag, q.sources) == (
        3,
        31744,
        7,
        0xFF,
        False,
        (),
    )
    data = scapy_bytes(
        IGMPv3_MQ(mrcode=250, gaddr="234.198.18.3", srcaddrs=["198.18.0.1", "198.18.0.2"]),
        "234.198.18.3",
    )
    q = igmp.parse(data)
    assert (q.version, q.max_resp_ds, q.group) == (3, 248, parse_ip("234.198.18.3"))
    assert q.sources == (parse_ip("198.18.0.1"), parse_ip("198.18.0.2"))
    q = igmp.parse(scapy_bytes(IGMP_MQ(mrcode=50, gaddr="234.198.18.3"), "234.198.18.3"))
    assert q == IgmpQuery(2, 50, parse_ip("234.198.18.3"))
    q = igmp.parse(scapy_bytes(IGMP_MQ(mrcode=0), "224.0.0.1"))
    assert q == IgmpQuery(1, 100, GENERAL)


@pytest.mark.parametrize(("layer", "kind"), [(IGMP_MR, 0x12), (IGMPv2_MR, 0x16), (IGMPv2_LG, 0x17)])
def test_scapy_built_v2_messages_parse(layer: type, kind: int) -> None:
    data = scapy_bytes(layer(gaddr="234.198.18.7"), "234.198.18.7")
    assert igmp.parse(data) == IgmpV2Message(kind, parse_ip("234.198.18.7"))


def scapy_dissect(data: bytes, dst: bytes) -> IP:
    """Our message behind a scapy IPv4 header as the IP layer must send it
    (TTL 1, ToS 0xc0, Router Alert), dissected by scapy, whose checksum must
    be the one we wrote."""
    pkt = behind_ip(
        data,
        SRC,
        format_ip(dst),
        IPPROTO_IGMP,
        ttl=igmp.IGMP_TTL,
        tos=igmp.IGMP_TOS,
        options=[IPOption_Router_Alert()],
    )
    assert bytes(pkt)[20:24] == igmp.ROUTER_ALERT_OPTION
    layer = type(pkt.payload)
    assert pkt[layer].chksum == scapy_checksum(pkt, layer)
    return pkt


def test_emitted_v3_report_dissects_in_scapy() -> None:
    report = IgmpV3Report(
        [
            IgmpGroupRecord(IgmpRecordType.CHANGE_TO_EXCLUDE_MODE, GROUP1),
            IgmpGroupRecord(IgmpRecordType.BLOCK_OLD_SOURCES, GROUP2, (S10, S11)),
        ]
    )
    pkt = scapy_dissect(report.to_bytes(), igmp.destination(report))
    r = pkt[IGMPv3_MR]
    assert r.numgrp == 2
    assert [(g.rtype, g.maddr, g.srcaddrs) for g in r.records] == [
        (4, "234.198.18.1", []),
        (6, "234.198.18.2", ["198.18.0.10", "198.18.0.11"]),
    ]


def test_emitted_queries_dissect_in_scapy() -> None:
    q = IgmpQuery(
        3,
        igmp.decode_max_resp_code(igmp.encode_max_resp_code(600)),
        GROUP2,
        s_flag=True,
        qrv=3,
        qqic=igmp.encode_qqic(300),
        sources=(S5, S10),
    )
    s = scapy_dissect(q.to_bytes(), igmp.destination(q))[IGMPv3_MQ]
    # scapy keeps the decoded time internally and shows the code as the attribute.
    assert (s.mrcode, s.fields["mrcode"]) == (igmp.encode_max_resp_code(600), 576)
    assert (s.fields["mrcode"], s.gaddr, s.s, s.qrv, s.qqic, s.srcaddrs) == (
        q.max_resp_ds,
        "234.198.18.2",
        1,
        3,
        q.qqic,
        ["198.18.0.5", "198.18.0.10"],
    )
    for msg, code in [(IgmpQuery(2, 77, GENERAL), 77), (IgmpQuery(1, 100, GENERAL), 0)]:
        s = scapy_dissect(msg.to_bytes(), igmp.destination(msg))[IGMP_MQ]
        assert (s.type, s.mrcode, s.gaddr) == (0x11, code, "0.0.0.0")


@pytest.mark.parametrize(("kind", "layer"), [(0x12, IGMP_MR), (0x16, IGMPv2_MR), (0x17, IGMPv2_LG)])
def test_emitted_v2_messages_dissect_in_scapy(kind: int, layer: type) -> None:
    msg = IgmpV2Message(kind, GROUP2)
    s = scapy_dissect(msg.to_bytes(), igmp.destination(msg))[layer]
    assert (s.type, s.mrcode, s.gaddr) == (kind, 0, "234.198.18.2")


# --------------------------------------------------------------------------- hypothesis

addr4 = st.binary(min_size=4, max_size=4)
multicast = st.tuples(st.integers(224, 239), st.binary(min_size=3, max_size=3)).map(
    lambda t: bytes([t[0]]) + t[1]
)
query_group = st.one_of(st.just(GENERAL), multicast)
sources = st.lists(addr4, max_size=3).map(tuple)
records = st.builds(
    IgmpGroupRecord,
    st.integers(0, 255),
    multicast,
    sources,
    st.integers(0, 3).flatmap(lambda k: st.binary(min_size=4 * k, max_size=4 * k)),
)
reports = st.builds(IgmpV3Report, st.lists(records, max_size=4))
queries = st.one_of(
    st.builds(IgmpQuery, st.just(1), st.just(igmp.V1_MAX_RESP_DS), query_group),
    st.builds(IgmpQuery, st.just(2), st.integers(1, 255), query_group),
    st.builds(
        IgmpQuery,
        st.just(3),
        st.integers(0, 255).map(igmp.decode_max_resp_code),
        query_group,
        s_flag=st.booleans(),
        qrv=st.integers(0, 7),
        qqic=st.integers(0, 255),
        sources=sources,
    ),
)
v2_messages = st.builds(
    IgmpV2Message, st.sampled_from([0x12, 0x16, 0x17]), multicast, st.integers(0, 255)
)


@given(st.one_of(reports, queries, v2_messages))
def test_roundtrip(msg: igmp.IgmpMessage) -> None:
    data = igmp.message_bytes(msg)
    assert len(data) == msg.length
    assert csum.verify(data)
    assert igmp.parse(data) == msg


def check_view(v: IgmpQueryView | IgmpV3ReportView | IgmpV2MessageView) -> None:
    v.fields()
    v.header()
    v.summary()
    _ = v.checksum
    if isinstance(v, IgmpQueryView):
        _ = (v.version, v.max_resp_code, v.max_resp_ds, v.group, v.s_flag, v.qrv)
        _ = (v.qqic, v.query_interval_s, v.sources)
    elif isinstance(v, IgmpV3ReportView):
        _ = (v.number_of_records, list(v.records()))
    else:
        _ = (v.type, v.max_resp_ds, v.group)


@given(st.binary(max_size=64), st.sampled_from([0x11, 0x12, 0x16, 0x17, 0x22, 0x30]))
def test_arbitrary_bytes_raise_only_malformed(data: bytes, kind: int) -> None:
    for candidate in (data, fix(bytes([kind]) + data[1:]) if len(data) >= 4 else data):
        for view in (IgmpQueryView, IgmpV3ReportView, IgmpV2MessageView):
            for verify in (True, False):
                try:
                    check_view(view.checked(candidate, verify_checksum=verify))
                except MalformedPacket:
                    pass
        try:
            igmp.parse(candidate).summary()
        except MalformedPacket:
            pass


@given(
    st.lists(
        st.tuples(
            st.integers(0, 255), st.integers(0, 2), st.integers(0, 3), st.binary(max_size=20)
        ),
        max_size=3,
    ),
    st.integers(0, 5),
)
def test_record_shaped_bytes_raise_only_malformed(recs: list, count: int) -> None:
    """Report bodies made of plausible record headers reach the record checks."""
    body = b"".join(bytes([t, aux, 0, n, 234, 198, 18, 1]) + rest for t, aux, n, rest in recs)
    data = fix(bytes([0x22, 0, 0, 0, 0, 0, 0, count]) + body)
    try:
        v = IgmpV3ReportView.checked(data)
    except MalformedPacket:
        return
    assert len(list(v.records())) == count
    check_view(v)
