"""MLD codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLQuery,
    ICMPv6MLQuery2,
    ICMPv6MLReport2,
    IPv6,
)

from shardnet.common.addr import parse_ip
from shardnet.common.wire import mld
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.icmpv6 import icmpv6_pseudo
from shardnet.common.wire.ipv6 import ALL_NODES, ALL_ROUTERS, OPT_ROUTER_ALERT
from shardnet.common.wire.mld import (
    MldQuery,
    MldQueryView,
    MldRecordType,
    MldReport,
    MldReportView,
    MulticastAddressRecord,
)

from .helpers import assert_drop, dissect_icmpv6, ip_payload

SRC = parse_ip("fe80::1")


def pseudo(data: bytes | bytearray, dst: bytes) -> int:
    return icmpv6_pseudo(SRC, dst, len(data))


# From scapy, inside IPv6(src="fe80::1", dst=..., hlim=1):
# dst ff02::16: ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(rtype=2, dst="ff02::fb"),
#   ICMPv6MLDMultAddrRec(rtype=5, dst="ff05::1:3", sources=["2001:db8::1", "2001:db8::2"])])
GOLDEN_REPORT = bytes.fromhex(
    "8f00115900000002"
    "02000000ff0200000000000000000000000000fb"
    "05000002ff050000000000000000000000010003"
    "20010db8000000000000000000000001"
    "20010db8000000000000000000000002"
)
# dst ff05::1:3: ICMPv6MLQuery2(mrd=10000, mladdr="ff05::1:3", S=1, QRV=2, QQIC=125,
#   sources=["2001:db8::5"])
GOLDEN_QUERY2 = bytes.fromhex(
    "820021b727100000ff0500000000000000000000000100030a7d000120010db8000000000000000000000005"
)
# dst ff02::1: ICMPv6MLQuery(mrd=10000)
GOLDEN_QUERY1 = bytes.fromhex("820059172710000000000000000000000000000000000000")

REPORT = MldReport(
    [
        MulticastAddressRecord(MldRecordType.MODE_IS_EXCLUDE, parse_ip("ff02::fb")),
        MulticastAddressRecord(
            MldRecordType.ALLOW_NEW_SOURCES,
            parse_ip("ff05::1:3"),
            (parse_ip("2001:db8::1"), parse_ip("2001:db8::2")),
        ),
    ],
    0x1159,
)
QUERY2 = MldQuery(
    10000,
    parse_ip("ff05::1:3"),
    version=2,
    s_flag=True,
    qrv=2,
    qqic=125,
    sources=(parse_ip("2001:db8::5"),),
    checksum=0x21B7,
)
QUERY1 = MldQuery(10000, version=1, checksum=0x5917)
CASES = [
    (GOLDEN_REPORT, REPORT, mld.MLDV2_ALL_ROUTERS),
    (GOLDEN_QUERY2, QUERY2, parse_ip("ff05::1:3")),
    (GOLDEN_QUERY1, QUERY1, ALL_NODES),
]
IDS = ["report", "query2", "query1"]


def test_deconstruct_report() -> None:
    v = MldReportView.checked(
        GOLDEN_REPORT, pseudo=pseudo(GOLDEN_REPORT, mld.MLDV2_ALL_ROUTERS), hop_limit=1
    )
    assert v.fields() == (143, 0x1159, 2)
    assert (v.checksum, v.number_of_records) == (0x1159, 2)
    records = list(v.records())
    assert [r.record_type for r in records] == [2, 5]
    assert records[1].sources == (parse_ip("2001:db8::1"), parse_ip("2001:db8::2"))


def test_deconstruct_query2() -> None:
    v = MldQueryView.checked(
        GOLDEN_QUERY2, pseudo=pseudo(GOLDEN_QUERY2, parse_ip("ff05::1:3")), hop_limit=1
    )
    assert v.version == 2
    assert v.fields() == (130, 0, 0x21B7, 10000, parse_ip("ff05::1:3"), 0x0A, 125, 1)
    assert (v.max_resp_code, v.max_resp_delay, v.multicast_address) == (
        10000,
        10000,
        parse_ip("ff05::1:3"),
    )
    assert (v.s_flag, v.qrv, v.qqic, v.query_interval) == (True, 2, 125, 125)
    assert v.sources == (parse_ip("2001:db8::5"),)
    assert v.checksum == 0x21B7


def test_deconstruct_query1() -> None:
    v = MldQueryView.checked(GOLDEN_QUERY1, pseudo=pseudo(GOLDEN_QUERY1, ALL_NODES), hop_limit=1)
    assert v.version == 1
    assert v.fields() == (130, 0, 0x5917, 10000, bytes(16))
    assert (v.max_resp_delay, v.s_flag, v.qrv, v.qqic, v.sources) == (10000, False, 0, 0, ())


@pytest.mark.parametrize(("golden", "msg", "dst"), CASES, ids=IDS)
def test_construct(golden: bytes, msg: MldQuery | MldReport, dst: bytes) -> None:
    expected = msg.checksum
    msg.checksum = 0
    buf = bytearray(msg.length)
    assert msg.emit(buf, pseudo=pseudo(golden, dst)) == len(golden)
    assert bytes(buf) == golden
    assert msg.checksum == expected
    assert msg.to_bytes(SRC, dst) == golden


@pytest.mark.parametrize(("golden", "msg", "dst"), CASES, ids=IDS)
def test_parse(golden: bytes, msg: MldQuery | MldReport, dst: bytes) -> None:
    assert mld.parse(golden, pseudo=pseudo(golden, dst), hop_limit=1) == msg
    assert type(msg).parse(golden) == msg


@pytest.mark.parametrize(("golden", "msg", "dst"), CASES, ids=IDS)
def test_emit(golden: bytes, msg: MldQuery | MldReport, dst: bytes) -> None:
    buf = bytearray(len(golden) + 5)
    assert msg.emit(buf, 5) == len(golden)  # checksum as stored
    assert bytes(buf[5:]) == golden


def test_unknown_record_type_is_kept() -> None:
    """RFC 3810 §5.2.12: an unrecognized record is ignored, not the report."""
    report = MldReport(
        [
            MulticastAddressRecord(9, parse_ip("ff05::2")),
            MulticastAddressRecord(1, parse_ip("ff05::3")),
        ]
    )
    assert MldReport.parse(report.to_bytes()).records[0].record_type == 9
    assert "type 9 ff05::2" in report.summary()


def test_aux_data() -> None:
    rec = MulticastAddressRecord(
        MldRecordType.MODE_IS_INCLUDE, parse_ip("ff05::2"), (), b"abcdefgh"
    )
    data = MldReport([rec]).to_bytes()
    assert data[9] == 2  # aux data length in 32-bit words, RFC 3810 §5.2.6
    assert MldReport.parse(data).records == [rec]
    with pytest.raises(ValueError):
        MulticastAddressRecord(1, parse_ip("ff05::2"), (), b"abc").emit(bytearray(40))


def test_summaries() -> None:
    assert REPORT.summary() == (
        "MLDv2 report 2 record(s) [MODE_IS_EXCLUDE ff02::fb,"
        " ALLOW_NEW_SOURCES ff05::1:3 [2001:db8::1, 2001:db8::2]]"
    )
    assert MldQueryView.checked(GOLDEN_QUERY2, pseudo=None).summary() == (
        "MLDv2 query ff05::1:3 max resp 10000ms S qrv 2 qqi 125s sources [2001:db8::5]"
    )
    assert QUERY1.summary() == "MLDv1 query general max resp 10000ms"


@pytest.mark.parametrize(
    ("code", "ms"),
    [
        (0, 0),
        (10000, 10000),
        (0x7FFF, 0x7FFF),
        (0x8000, 0x1000 << 3),
        (0x9C40, 115712),
        (0xFFFF, 0x1FFF << 10),
    ],
)
def test_max_resp_code(code: int, ms: int) -> None:
    """RFC 3810 §5.1.3 floating-point encoding."""
    assert mld.decode_max_resp_code(code) == ms
    assert mld.encode_max_resp_code(ms) == code


@pytest.mark.parametrize(
    ("code", "s"), [(0, 0), (125, 125), (127, 127), (0x80, 128), (0xFF, 31744)]
)
def test_qqic(code: int, s: int) -> None:
    """RFC 3810 §5.1.9."""
    assert mld.decode_qqic(code) == s
    assert mld.encode_qqic(s) == code


@given(st.integers(0, 10_000_000))
def test_max_resp_code_rounds_down(ms: int) -> None:
    got = mld.decode_max_resp_code(mld.encode_max_resp_code(ms))
    assert got <= ms
    assert ms >= 0x1FFF << 10 or got > ms * 0.999 - 1024


@given(st.integers(0, 40_000))
def test_qqic_rounds_down(s: int) -> None:
    got = mld.decode_qqic(mld.encode_qqic(s))
    assert got <= s and (s >= 31744 or got * 17 >= s * 16)


def test_constants() -> None:
    assert mld.MLD_HOP_LIMIT == 1
    assert mld.MLDV2_ALL_ROUTERS == parse_ip("ff02::16")
    assert (OPT_ROUTER_ALERT, mld.ROUTER_ALERT_MLD) == (5, 0)


# --------------------------------------------------------------------------- drops

REPORT_DROPS: list[tuple[str, bytes, dict, Drop]] = [
    ("short", GOLDEN_REPORT[:3], {}, Drop.MLD_TRUNCATED),
    ("not-report", GOLDEN_QUERY1, {}, Drop.MLD_BAD_TYPE),
    (
        "checksum",
        GOLDEN_REPORT[:-1] + b"\x03",
        {"pseudo": pseudo(GOLDEN_REPORT, mld.MLDV2_ALL_ROUTERS)},
        Drop.ICMPV6_BAD_CHECKSUM,
    ),
    ("hop-limit-255", GOLDEN_REPORT, {"hop_limit": 255}, Drop.MLD_BAD_HOP_LIMIT),
    ("header-short", GOLDEN_REPORT[:7], {}, Drop.MLD_TRUNCATED),
    ("record-header-cut", GOLDEN_REPORT[:27], {}, Drop.MLD_TRUNCATED),
    (
        "records-count-too-big",
        GOLDEN_REPORT[:7] + b"\x03" + GOLDEN_REPORT[8:],
        {},
        Drop.MLD_TRUNCATED,
    ),
    ("sources-cut", GOLDEN_REPORT[:-1], {}, Drop.MLD_TRUNCATED),
    ("aux-past-end", GOLDEN_REPORT[:29] + b"\x01" + GOLDEN_REPORT[30:], {}, Drop.MLD_TRUNCATED),
    (
        "record-not-multicast",
        GOLDEN_REPORT[:12] + parse_ip("2001:db8::1") + GOLDEN_REPORT[28:],
        {},
        Drop.MLD_BAD_RECORD,
    ),
]
QUERY_DROPS: list[tuple[str, bytes, dict, Drop]] = [
    ("short", GOLDEN_QUERY1[:2], {}, Drop.MLD_TRUNCATED),
    ("not-query", GOLDEN_REPORT, {}, Drop.MLD_BAD_TYPE),
    (
        "checksum",
        GOLDEN_QUERY1[:-1] + b"\x01",
        {"pseudo": pseudo(GOLDEN_QUERY1, ALL_NODES)},
        Drop.ICMPV6_BAD_CHECKSUM,
    ),
    ("hop-limit-2", GOLDEN_QUERY1, {"hop_limit": 2}, Drop.MLD_BAD_HOP_LIMIT),
    ("v1-short", GOLDEN_QUERY1[:23], {}, Drop.MLD_TRUNCATED),
    ("length-26", GOLDEN_QUERY2[:26], {}, Drop.MLD_TRUNCATED),  # RFC 3810 §8.1 example
    ("sources-cut", GOLDEN_QUERY2[:-1], {}, Drop.MLD_TRUNCATED),
    ("unicast-address", GOLDEN_QUERY1[:8] + parse_ip("2001:db8::1"), {}, Drop.MLD_BAD_ADDRESS),
]


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"), [d[1:] for d in REPORT_DROPS], ids=[d[0] for d in REPORT_DROPS]
)
def test_report_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "mld", MldReportView.checked, data, **kwargs)


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"), [d[1:] for d in QUERY_DROPS], ids=[d[0] for d in QUERY_DROPS]
)
def test_query_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "mld", MldQueryView.checked, data, **kwargs)


def test_trailing_bytes_after_records_ignored() -> None:
    assert MldReport.parse(GOLDEN_REPORT + bytes(4)) == REPORT


# --------------------------------------------------------------------------- scapy oracle


def scapy_bytes(layer, dst: str) -> bytes:  # noqa: ANN001
    return ip_payload(IPv6(src="fe80::1", dst=dst, hlim=1) / layer)


def test_scapy_built_report_parses() -> None:
    records = [
        ICMPv6MLDMultAddrRec(
            rtype=t, dst=f"ff05::{t}", sources=[f"2001:db8::{i}" for i in range(t)]
        )
        for t in range(1, 7)
    ]
    # scapy counts auxdata_len in bytes (RFC 3810 §5.2.6 says 32-bit words): set it by hand.
    records.append(ICMPv6MLDMultAddrRec(rtype=4, dst="ff05::7", auxdata_len=1, auxdata=b"wxyz"))
    data = scapy_bytes(ICMPv6MLReport2(records=records), "ff02::16")
    r = mld.parse(data, pseudo=pseudo(data, mld.MLDV2_ALL_ROUTERS), hop_limit=1)
    assert isinstance(r, MldReport)
    assert [(x.record_type, x.multicast_address, len(x.sources)) for x in r.records[:6]] == [
        (t, parse_ip(f"ff05::{t}"), t) for t in range(1, 7)
    ]
    assert r.records[5].sources[5] == parse_ip("2001:db8::5")
    assert r.records[6] == MulticastAddressRecord(4, parse_ip("ff05::7"), (), b"wxyz")


def test_scapy_built_queries_parse() -> None:
    data = scapy_bytes(ICMPv6MLQuery2(mrd=0xFFFF, QRV=7, QQIC=0xFF), "ff02::1")
    q = mld.parse(data, pseudo=pseudo(data, ALL_NODES), hop_limit=1)
    assert isinstance(q, MldQuery)
    assert (q.version, q.max_resp_delay, q.qrv, q.qqic, q.s_flag, q.sources) == (
        2,
        0x1FFF << 10,
        7,
        0xFF,
        False,
        (),
    )
    data = scapy_bytes(ICMPv6MLQuery(mrd=500, mladdr="ff05::1:3"), "ff05::1:3")
    q = mld.parse(data, pseudo=pseudo(data, parse_ip("ff05::1:3")), hop_limit=1)
    assert (q.version, q.max_resp_code, q.multicast_address) == (1, 500, parse_ip("ff05::1:3"))


def scapy_dissect(data: bytes, dst: str) -> IPv6:
    return dissect_icmpv6(data, "fe80::1", dst, hlim=1)


def test_emitted_report_dissects_in_scapy() -> None:
    report = MldReport(
        [
            MulticastAddressRecord(
                MldRecordType.CHANGE_TO_EXCLUDE_MODE, parse_ip("ff02::1:ff00:1")
            ),
            MulticastAddressRecord(
                MldRecordType.BLOCK_OLD_SOURCES, parse_ip("ff05::9"), (parse_ip("2001:db8::7"),)
            ),
        ]
    )
    pkt = scapy_dissect(report.to_bytes(SRC, mld.MLDV2_ALL_ROUTERS), "ff02::16")
    r = pkt[ICMPv6MLReport2]
    assert r.records_number == 2
    # scapy dissects the second record as the payload of the first: flatten.
    flat = []
    for rec in r.records:
        while isinstance(rec, ICMPv6MLDMultAddrRec):
            flat.append((rec.rtype, rec.dst, rec.sources))
            rec = rec.payload
    assert flat == [
        (4, "ff02::1:ff00:1", []),
        (6, "ff05::9", ["2001:db8::7"]),
    ]


def test_emitted_queries_dissect_in_scapy() -> None:
    q = MldQuery(
        mld.encode_max_resp_code(60000),
        parse_ip("ff05::9"),
        s_flag=True,
        qrv=3,
        qqic=mld.encode_qqic(300),
        sources=(parse_ip("2001:db8::1"),),
    )
    pkt = scapy_dissect(q.to_bytes(SRC, parse_ip("ff05::9")), "ff05::9")
    s = pkt[ICMPv6MLQuery2]
    assert (s.mrd, s.mladdr, s.S, s.QRV, s.QQIC, s.sources) == (
        q.max_resp_code,
        "ff05::9",
        1,
        3,
        q.qqic,
        ["2001:db8::1"],
    )
    pkt = scapy_dissect(MldQuery(1000, version=1).to_bytes(SRC, ALL_NODES), "ff02::1")
    assert (pkt[ICMPv6MLQuery].mrd, pkt[ICMPv6MLQuery].mladdr) == (1000, "::")


# --------------------------------------------------------------------------- hypothesis

addr16 = st.binary(min_size=16, max_size=16)
multicast = st.binary(min_size=15, max_size=15).map(lambda b: b"\xff" + b)
records = st.builds(
    MulticastAddressRecord,
    st.integers(0, 255),
    multicast,
    st.lists(addr16, max_size=3).map(tuple),
    st.integers(0, 3).flatmap(lambda k: st.binary(min_size=4 * k, max_size=4 * k)),
)
reports = st.builds(MldReport, st.lists(records, max_size=4))
queries = st.one_of(
    st.builds(
        MldQuery,
        st.integers(0, 0xFFFF),
        st.one_of(st.just(bytes(16)), multicast),
        version=st.just(1),
    ),
    st.builds(
        MldQuery,
        st.integers(0, 0xFFFF),
        st.one_of(st.just(bytes(16)), multicast),
        version=st.just(2),
        s_flag=st.booleans(),
        qrv=st.integers(0, 7),
        qqic=st.integers(0, 255),
        sources=st.lists(addr16, max_size=3).map(tuple),
    ),
)


@given(st.one_of(reports, queries))
def test_roundtrip(msg: MldQuery | MldReport) -> None:
    data = msg.to_bytes(SRC, mld.MLDV2_ALL_ROUTERS)
    assert len(data) == msg.length
    assert mld.parse(data, pseudo=pseudo(data, mld.MLDV2_ALL_ROUTERS), hop_limit=1) == msg


def check_query(v: MldQueryView) -> None:
    _ = (v.fields(), v.version, v.checksum, v.max_resp_delay, v.multicast_address)
    _ = (v.s_flag, v.qrv, v.qqic, v.query_interval, v.sources)
    v.summary()


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    for kind in (130, 143):
        data = bytes([kind]) + data[1:] if data else data
        try:
            if kind == 130:
                check_query(MldQueryView.checked(data, pseudo=None))
            else:
                v = MldReportView.checked(data, pseudo=None)
                _ = (v.fields(), v.checksum, v.number_of_records, list(v.records()))
                v.summary()
        except MalformedPacket:
            pass
        try:
            mld.parse(data, pseudo=pseudo(data, ALL_NODES), hop_limit=1)
        except MalformedPacket:
            pass


@given(
    st.lists(
        st.tuples(
            st.integers(0, 255), st.integers(0, 2), st.integers(0, 3), st.binary(max_size=40)
        ),
        max_size=3,
    ),
    st.integers(0, 5),
)
def test_record_shaped_bytes_raise_only_malformed(recs: list, count: int) -> None:
    """Report bodies made of plausible record headers reach the record checks."""
    body = b"".join(bytes([t, aux, 0, n]) + b"\xff" + bytes(15) + rest for t, aux, n, rest in recs)
    data = bytes([143, 0, 0, 0, 0, 0, 0, count]) + body
    try:
        v = MldReportView.checked(data, pseudo=None)
    except MalformedPacket:
        return
    assert len(list(v.records())) == count
    v.summary()


# --------------------------------------------------------------------------- MLDv1 report, done

GROUP = parse_ip("ff3e:40:2001:db8::7")
# From scapy: IPv6(src="fe80::1", dst=group, hlim=1) / ICMPv6MLReport(mladdr=group) and
# IPv6(src="fe80::1", dst="ff02::2", hlim=1) / ICMPv6MLDone(mladdr=group).
GOLDEN_V1_REPORT = bytes.fromhex("830023ad00000000ff3e004020010db80000000000000007")
GOLDEN_V1_DONE = bytes.fromhex("840050e700000000ff3e004020010db80000000000000007")
V1_CASES = [
    (GOLDEN_V1_REPORT, mld.MldV1Message(131, GROUP), GROUP),
    (GOLDEN_V1_DONE, mld.MldV1Message(132, GROUP), ALL_ROUTERS),
]


@pytest.mark.parametrize(("golden", "msg", "dst"), V1_CASES)
def test_v1_message_golden(golden: bytes, msg: mld.MldV1Message, dst: bytes) -> None:
    view = mld.MldV1MessageView.checked(golden, pseudo=pseudo(golden, dst), hop_limit=1)
    assert (view.type, view.multicast_address) == (msg.type, GROUP)
    parsed = mld.parse(golden, pseudo=pseudo(golden, dst))
    assert isinstance(parsed, mld.MldV1Message)
    assert (parsed.type, parsed.multicast_address, parsed.max_resp_delay) == (msg.type, GROUP, 0)
    assert mld.MldV1Message(msg.type, GROUP).to_bytes(SRC, dst) == golden
    buf = bytearray(30)
    assert mld.MldV1Message(msg.type, GROUP).emit(buf, 3, pseudo=pseudo(golden, dst)) == 24
    assert bytes(buf[3:27]) == golden


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOLDEN_V1_REPORT[:20], Drop.MLD_TRUNCATED),
        (b"\x85" + GOLDEN_V1_REPORT[1:], Drop.MLD_BAD_TYPE),
        (GOLDEN_V1_REPORT[:8] + parse_ip("2001:db8::1"), Drop.MLD_BAD_ADDRESS),
        (GOLDEN_V1_REPORT[:2] + b"\0\0" + GOLDEN_V1_REPORT[4:], Drop.ICMPV6_BAD_CHECKSUM),
    ],
)
def test_v1_message_drop_reasons(data: bytes, reason: Drop) -> None:
    check = pseudo(data, GROUP) if reason is Drop.ICMPV6_BAD_CHECKSUM else None
    assert_drop(reason, "mld", mld.MldV1Message.parse, data, pseudo=check)


def test_v1_message_needs_hop_limit_1() -> None:
    assert_drop(
        Drop.MLD_BAD_HOP_LIMIT, "mld", mld.MldV1Message.parse, GOLDEN_V1_REPORT, hop_limit=2
    )


def test_emitted_v1_messages_dissect_in_scapy() -> None:
    report = scapy_dissect(mld.MldV1Message(131, GROUP).to_bytes(SRC, GROUP), "ff3e:40:2001:db8::7")
    assert (
        report.haslayer("ICMPv6MLReport")
        and report["ICMPv6MLReport"].mladdr == "ff3e:40:2001:db8::7"
    )
    done = scapy_dissect(mld.MldV1Message(132, GROUP).to_bytes(SRC, ALL_ROUTERS), "ff02::2")
    assert done.haslayer("ICMPv6MLDone")


@given(st.binary(min_size=24, max_size=40), st.sampled_from([131, 132]))
def test_v1_arbitrary_bytes_raise_only_malformed(data: bytes, kind: int) -> None:
    try:
        msg = mld.MldV1Message.parse(bytes([kind]) + data[1:])
    except MalformedPacket:
        return
    assert msg.summary()
