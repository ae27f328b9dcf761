"""ICMPv4 codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_Router_Alert, UDPerror

from shardnet.common.addr import parse_ip
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.icmpv4 import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_ERROR_MAX_LEN,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    ICMP_PARAM_PROBLEM,
    ICMP_PORT_UNREACH,
    ICMP_TIME_EXCEEDED,
    ICMPV4_HEADER_LEN,
    Icmpv4Header,
    Icmpv4View,
    build_icmpv4_error,
    quoted_flow,
)
from shardnet.common.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP

from .helpers import assert_drop, ip_payload, scapy_checksum

SRC, DST = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
# Echo request id 0x1234 seq 5 "ping"; from scapy.
GOLDEN = bytes.fromhex("080006f61234000570696e67")
GOLDEN_HDR = Icmpv4Header(ICMP_ECHO_REQUEST, 0, 0x06F6, 0x12340005)
# 198.18.0.1:4000 > 198.18.0.2:7 UDP "payload!", id 9: the datagram quoted
# below, and scapy's port unreachable quoting it.
UDP_DGRAM = bytes.fromhex(
    "45000024000900004011ee98c6120001c61200020fa000070010a6ae7061796c6f616421"
)
GOLDEN_ERR = bytes.fromhex("0303894600000000") + UDP_DGRAM


def test_deconstruct() -> None:
    v = Icmpv4View.checked(GOLDEN)
    assert (v.type, v.code, v.checksum, v.rest) == (8, 0, 0x06F6, 0x12340005)
    assert (v.ident, v.seq, bytes(v.data), bytes(v.payload)) == (0x1234, 5, b"ping", b"ping")
    assert v.fields() == (8, 0, 0x06F6, 0x12340005)
    assert not v.is_error
    assert bytes(v.quoted) == b""


def test_construct() -> None:
    buf = bytearray(12)
    buf[8:] = b"ping"
    h = Icmpv4Header.echo_request(0x1234, 5)
    assert h.emit(buf) == ICMPV4_HEADER_LEN
    assert bytes(buf) == GOLDEN
    assert h.checksum == 0x06F6


def test_parse() -> None:
    assert Icmpv4Header.parse(GOLDEN) == GOLDEN_HDR
    assert (GOLDEN_HDR.ident, GOLDEN_HDR.seq) == (0x1234, 5)


def test_emit() -> None:
    buf = bytearray(12)
    assert GOLDEN_HDR.emit(buf, 2, compute_checksum=False) == 8
    assert bytes(buf[2:10]) == GOLDEN[:8]


def test_emit_checksum_over_length() -> None:
    buf = bytearray(20)
    buf[10:14] = b"ping"
    buf[14:] = b"trailer"[:6]
    h = Icmpv4Header.echo_request(0x1234, 5)
    h.emit(buf, 2, length=12)
    assert bytes(buf[2:14]) == GOLDEN


def test_golden_error() -> None:
    v = Icmpv4View.checked(GOLDEN_ERR)
    assert (v.type, v.code, v.is_error) == (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, True)
    assert bytes(v.quoted) == UDP_DGRAM
    assert quoted_flow(v.quoted) == (IPPROTO_UDP, SRC, DST, 4000, 7)
    assert build_icmpv4_error(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, UDP_DGRAM) == GOLDEN_ERR


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOLDEN[:7], Drop.ICMPV4_TRUNCATED),
        (b"", Drop.ICMPV4_TRUNCATED),
        (GOLDEN[:-1] + b"x", Drop.ICMPV4_BAD_CHECKSUM),
        (bytes(8), Drop.ICMPV4_BAD_CHECKSUM),  # all zeros sum to +0, not -0
    ],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "icmpv4", Icmpv4View.checked, data)


def test_checksum_field_zero() -> None:
    """A message whose sum is -0 carries 0x0000 (scapy writes the same) and verifies."""
    golden = bytes.fromhex("08000000123406fb70696e67")  # echo id 0x1234 seq 1787 "ping"
    buf = bytearray(golden[:2]) + b"\xff\xff" + golden[4:]
    h = Icmpv4Header.echo_request(0x1234, 1787)
    h.emit(buf)
    assert bytes(buf) == golden and h.checksum == 0
    assert Icmpv4View.checked(golden).seq == 1787


def test_verify_checksum_can_be_skipped() -> None:
    assert Icmpv4View.checked(GOLDEN[:-1] + b"x", verify_checksum=False).seq == 5


def test_summary() -> None:
    assert GOLDEN_HDR.summary() == "ICMP echo request id 4660 seq 5"
    assert Icmpv4View.checked(GOLDEN).summary() == "ICMP echo request id 4660 seq 5 len 4"
    assert Icmpv4View.checked(GOLDEN_ERR).summary() == (
        "ICMP dest unreachable port unreachable len 36 for 198.18.0.1:4000 > 198.18.0.2:7 proto 17"
    )
    assert Icmpv4Header(3, 4, 0, 1400).summary() == "ICMP dest unreachable frag needed mtu 1400"
    assert Icmpv4Header(12, 0, 0, 22 << 24).summary() == "ICMP parameter problem code 0 pointer 22"
    assert Icmpv4Header(11, 1).summary() == "ICMP time exceeded code 1"
    assert Icmpv4Header(42, 7).summary() == "ICMP type 42 code 7"


def udp_dgram(payload: bytes = b"payload!", **ip: object) -> bytes:
    return bytes(IP(src="198.18.0.1", dst="198.18.0.2", **ip) / UDP(sport=4000, dport=7) / payload)


@pytest.mark.parametrize(
    ("icmp", "check"),
    [
        (
            ICMP(type=8, id=7, seq=9) / b"abc",
            lambda v: (v.ident, v.seq, bytes(v.data)) == (7, 9, b"abc"),
        ),
        (ICMP(type=0, id=7, seq=9), lambda v: (v.type, v.ident, v.seq) == (ICMP_ECHO_REPLY, 7, 9)),
        (
            ICMP(type=3, code=4, nexthopmtu=1400) / udp_dgram(),
            lambda v: (v.code, v.next_hop_mtu, v.is_error) == (ICMP_FRAG_NEEDED, 1400, True),
        ),
        (
            ICMP(type=3, code=1) / udp_dgram(),
            lambda v: v.code == ICMP_HOST_UNREACH and bytes(v.quoted) == udp_dgram(),
        ),
        (
            ICMP(type=11, code=0) / udp_dgram(),
            lambda v: v.type == ICMP_TIME_EXCEEDED and v.is_error,
        ),
        (
            ICMP(type=12, ptr=22) / udp_dgram(),
            lambda v: (v.type, v.pointer) == (ICMP_PARAM_PROBLEM, 22),
        ),
        (
            ICMP(type=5, code=1, gw="198.18.0.254") / udp_dgram(),
            lambda v: v.gateway == bytes([198, 18, 0, 254]),
        ),
        (ICMP(type=4) / udp_dgram(), lambda v: v.is_error),
        (ICMP(type=13, id=1, seq=2, ts_ori=3), lambda v: not v.is_error and len(v.payload) == 12),
    ],
)
def test_scapy_built_parses(icmp: ICMP, check: object) -> None:
    msg = ip_payload(IP(src="198.18.0.2", dst="198.18.0.1") / icmp)
    v = Icmpv4View.checked(msg)
    assert v.checksum == ICMP(msg).chksum
    assert check(v)  # type: ignore[operator]


def test_scapy_error_quoting_udp() -> None:
    pkt = (
        IP(src="198.18.0.2", dst="198.18.0.1")
        / ICMP(type=3, code=3)
        / IPerror(src="198.18.0.1", dst="198.18.0.2", id=3)
        / UDPerror(sport=5353, dport=53)
        / b"question"
    )
    v = Icmpv4View.checked(ip_payload(pkt))
    assert quoted_flow(v.quoted) == (IPPROTO_UDP, SRC, DST, 5353, 53)


def test_build_error_dissects_in_scapy() -> None:
    dgram = udp_dgram(id=77)
    msg = build_icmpv4_error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, dgram, rest=1280)
    assert len(msg) == 8 + len(dgram)
    p = ICMP(msg)
    assert (p.type, p.code, p.nexthopmtu) == (3, 4, 1280)
    assert (p[IPerror].id, p[IPerror].src, p[UDPerror].sport, p[UDPerror].dport) == (
        77,
        "198.18.0.1",
        4000,
        7,
    )
    assert bytes(p[IPerror]) == dgram
    assert p.chksum == scapy_checksum(p, ICMP)  # scapy recomputes the same
    assert Icmpv4View.checked(msg).next_hop_mtu == 1280


def test_build_error_pointer_and_padding_cut() -> None:
    dgram = udp_dgram()
    msg = build_icmpv4_error(ICMP_PARAM_PROBLEM, 0, dgram + bytes(10), rest=9 << 24)
    v = Icmpv4View.checked(msg)
    assert (v.pointer, bytes(v.quoted)) == (9, dgram)


def test_build_error_fits_576() -> None:
    dgram = udp_dgram(b"x" * 1400)
    msg = build_icmpv4_error(ICMP_TIME_EXCEEDED, 0, dgram)
    assert len(msg) == ICMP_ERROR_MAX_LEN == 556  # + 20-byte IP header = 576, RFC 1812 §4.3.2.3
    assert bytes(Icmpv4View.checked(msg).quoted) == dgram[:548]


@pytest.mark.parametrize("with_options", [False, True])
def test_build_error_quotes_at_least_header_and_8_bytes(with_options: bool) -> None:
    ip: dict = {"options": [IPOption_Router_Alert()]} if with_options else {}
    dgram = udp_dgram(b"x" * 100, **ip)
    hl = 24 if with_options else 20
    msg = build_icmpv4_error(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, dgram, max_len=16)
    assert bytes(Icmpv4View.checked(msg).quoted) == dgram[: hl + 8]  # RFC 792
    assert quoted_flow(msg[8:]) == (IPPROTO_UDP, SRC, DST, 4000, 7)


def test_build_error_short_garbage_never_raises() -> None:
    msg = build_icmpv4_error(ICMP_DEST_UNREACH, 0, b"\x45\x00")
    assert bytes(Icmpv4View.checked(msg).quoted) == b"\x45\x00"
    assert quoted_flow(msg[8:]) is None


def test_quoted_flow() -> None:
    tcp = bytes(IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=40000, dport=80))
    assert quoted_flow(tcp[:24]) == (IPPROTO_TCP, SRC, DST, 40000, 80)
    ping = bytes(IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(id=5))
    assert quoted_flow(ping[:28]) == (IPPROTO_ICMP, SRC, DST, 0, 0)
    assert quoted_flow(ping[:20]) == (IPPROTO_ICMP, SRC, DST, 0, 0)
    dgram = udp_dgram()
    assert quoted_flow(memoryview(dgram)) == (IPPROTO_UDP, SRC, DST, 4000, 7)
    assert quoted_flow(bytearray(dgram[:24])) == (IPPROTO_UDP, SRC, DST, 4000, 7)


@pytest.mark.parametrize(
    "quote",
    [
        b"",
        UDP_DGRAM[:19],  # not a whole IP header
        UDP_DGRAM[:23],  # UDP without both ports
        b"\x65" + UDP_DGRAM[1:],  # version 6
        b"\x44" + UDP_DGRAM[1:],  # IHL 4
        b"\x4f" + UDP_DGRAM[1:],  # IHL 15 > quote
        UDP_DGRAM[:6] + b"\x00\xb9" + UDP_DGRAM[8:],  # non-first fragment: no ports
    ],
)
def test_quoted_flow_none(quote: bytes) -> None:
    assert quoted_flow(quote) is None


def test_quoted_flow_first_fragment_has_ports() -> None:
    first = UDP_DGRAM[:6] + b"\x20\x00" + UDP_DGRAM[8:]
    assert quoted_flow(first) == (IPPROTO_UDP, SRC, DST, 4000, 7)


def test_quoted_flow_not_a_buffer() -> None:
    assert quoted_flow(None) is None  # type: ignore[arg-type]


headers = st.builds(
    Icmpv4Header,
    type=st.integers(0, 255),
    code=st.integers(0, 255),
    checksum=st.just(0),
    rest=st.integers(0, 0xFFFFFFFF),
)


@given(headers, st.binary(max_size=64))
def test_roundtrip(h: Icmpv4Header, payload: bytes) -> None:
    buf = bytearray(ICMPV4_HEADER_LEN + len(payload))
    buf[ICMPV4_HEADER_LEN:] = payload
    h.emit(buf)
    assert Icmpv4Header.parse(buf) == h


@given(st.binary(max_size=80), st.booleans())
def test_arbitrary_bytes_raise_only_malformed(data: bytes, verify: bool) -> None:
    try:
        v = Icmpv4View.checked(data, verify_checksum=verify)
    except MalformedPacket:
        return
    v.fields()
    assert v.header() == Icmpv4Header(v.type, v.code, v.checksum, v.rest)
    _ = (v.ident, v.seq, v.next_hop_mtu, v.pointer, v.gateway, v.is_error)
    assert len(v.quoted) in (0, len(v.payload)) and bytes(v.data) == bytes(v.payload)
    v.header().summary()
    v.summary()


@given(st.binary(max_size=80))
def test_quoted_flow_never_raises(data: bytes) -> None:
    quoted_flow(data)


@given(st.integers(4, 15), st.sampled_from([1, 6, 17, 99]), st.binary(max_size=64))
def test_quoted_flow_near_valid_never_raises(ihl: int, proto: int, rest: bytes) -> None:
    quote = bytes([0x40 | ihl]) + UDP_DGRAM[1:9] + bytes([proto]) + UDP_DGRAM[10:20] + rest
    flow = quoted_flow(quote)
    if flow is not None:
        assert flow[0] == proto and ihl >= 5


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=700), st.integers(0, 1000))
def test_build_error_always_checksums(
    type_: int, code: int, offending: bytes, max_len: int
) -> None:
    msg = build_icmpv4_error(type_, code, offending, max_len=max_len)
    v = Icmpv4View.checked(msg)
    assert offending.startswith(bytes(v.payload))
