"""ICMPv6 codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)

from shardnet.common.addr import parse_ip
from shardnet.common.wire.errors import Drop, MalformedPacket
from shardnet.common.wire.icmpv6 import (
    ICMPV6_DST_UNREACH,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_HEADER_LEN,
    ICMPV6_MAX_QUOTE,
    ICMPV6_NEIGHBOR_SOLICIT,
    ICMPV6_PACKET_TOO_BIG,
    ICMPV6_PARAM_PROBLEM,
    ICMPV6_TIME_EXCEEDED,
    PARAM_UNRECOGNIZED_NEXT_HEADER,
    TIME_EXCEEDED_REASSEMBLY,
    UNREACH_PORT,
    Icmpv6Header,
    Icmpv6View,
    build_echo_reply,
    build_echo_request,
    build_icmpv6,
    build_icmpv6_error,
    icmpv6_pseudo,
    quoted_flow,
)
from shardnet.common.wire.ipv6 import IPV6_HEADER_LEN, IPV6_MIN_MTU

from .helpers import assert_drop, dissect_icmpv6, ip_payload

S, D = "2001:db8::1", "2001:db8::2"
SRC, DST = parse_ip(S), parse_ip(D)
# IPv6(src=S, dst=D) / ICMPv6EchoRequest(id=0x1234, seq=1, data=b"hi"), from scapy.
GOLDEN = bytes.fromhex("8000a9a7123400016869")
# ICMPv6PacketTooBig(mtu=1280) quoting IPv6(src=D, dst=S) / UDP(5353, 53) / b"hi".
QUOTED = bytes(IPv6(src=D, dst=S) / UDP(sport=5353, dport=53) / b"hi")
GOLDEN_PTB = bytes.fromhex("02002be700000500") + QUOTED


def pseudo(data: bytes, src: bytes = SRC, dst: bytes = DST) -> int:
    return icmpv6_pseudo(src, dst, len(data))


def test_deconstruct() -> None:
    v = Icmpv6View.checked(GOLDEN, pseudo=pseudo(GOLDEN))
    assert (v.type, v.code, v.checksum, v.rest) == (128, 0, 0xA9A7, 0x12340001)
    assert (v.ident, v.seq, bytes(v.data), bytes(v.body)) == (0x1234, 1, b"hi", b"hi")
    assert not v.is_error and bytes(v.quoted) == b""
    assert v.fields() == (128, 0, 0xA9A7, 0x12340001)


def test_deconstruct_error() -> None:
    v = Icmpv6View.checked(GOLDEN_PTB, pseudo=pseudo(GOLDEN_PTB))
    assert (v.type, v.code, v.checksum, v.mtu) == (ICMPV6_PACKET_TOO_BIG, 0, 0x2BE7, 1280)
    assert v.is_error and bytes(v.quoted) == QUOTED


def test_construct() -> None:
    assert build_echo_request(0x1234, 1, b"hi", src=SRC, dst=DST) == GOLDEN
    assert build_icmpv6_error(ICMPV6_PACKET_TOO_BIG, 0, QUOTED, src=SRC, dst=DST, rest=1280) == (
        GOLDEN_PTB
    )
    buf = bytearray(GOLDEN)
    buf[:8] = bytes(8)
    h = Icmpv6Header.echo(0x1234, 1)
    assert h.emit(buf, pseudo=pseudo(GOLDEN)) == ICMPV6_HEADER_LEN
    assert bytes(buf) == GOLDEN and h.checksum == 0xA9A7


def test_parse() -> None:
    assert Icmpv6Header.parse(GOLDEN) == Icmpv6Header(128, 0, 0xA9A7, 0x12340001)
    assert Icmpv6Header.parse(GOLDEN, pseudo=pseudo(GOLDEN)).ident == 0x1234


def test_emit() -> None:
    buf = bytearray(12)
    assert Icmpv6Header(128, 0, 0xA9A7, 0x12340001).emit(buf, 2) == 8
    assert bytes(buf[2:10]) == GOLDEN[:8]
    # The checksum over an explicit length inside a larger buffer.
    buf = bytearray(4) + bytearray(GOLDEN) + bytearray(6)
    Icmpv6Header.echo(0x1234, 1).emit(buf, 4, pseudo=pseudo(GOLDEN), length=len(GOLDEN))
    assert bytes(buf[4:14]) == GOLDEN


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (GOLDEN[:7], {"pseudo": None}, Drop.ICMPV6_TRUNCATED),
        (GOLDEN[:-1] + b"x", {"pseudo": pseudo(GOLDEN)}, Drop.ICMPV6_BAD_CHECKSUM),
        (GOLDEN[:2] + b"\0\0" + GOLDEN[4:], {"pseudo": pseudo(GOLDEN)}, Drop.ICMPV6_BAD_CHECKSUM),
        # The pseudo-header binds the addresses (RFC 4443 §2.3).
        (GOLDEN, {"pseudo": pseudo(GOLDEN, SRC, SRC)}, Drop.ICMPV6_BAD_CHECKSUM),
    ],
)
def test_drop_reasons(data: bytes, kwargs: dict, reason: Drop) -> None:
    assert_drop(reason, "icmpv6", Icmpv6View.checked, data, **kwargs)


def test_checksum_skipped_without_pseudo() -> None:
    assert Icmpv6View.checked(GOLDEN[:2] + b"\0\0" + GOLDEN[4:], pseudo=None).checksum == 0


def test_summary() -> None:
    assert Icmpv6View.checked(GOLDEN, pseudo=None).summary() == (
        "ICMP6 echo request id 4660 seq 1 len 10"
    )
    assert Icmpv6Header(ICMPV6_PACKET_TOO_BIG, 0, 0, 1280).summary() == (
        "ICMP6 packet too big mtu 1280"
    )
    assert Icmpv6Header(ICMPV6_PARAM_PROBLEM, 1, 0, 40).summary() == (
        "ICMP6 parameter problem code 1 pointer 40"
    )
    assert Icmpv6Header(ICMPV6_DST_UNREACH, 4).summary() == "ICMP6 destination unreachable code 4"
    assert Icmpv6Header(ICMPV6_NEIGHBOR_SOLICIT).summary() == "ICMP6 neighbor solicitation"
    assert Icmpv6Header(200, 3).summary() == "ICMP6 type 200 code 3"


# --- scapy as oracle --------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "type_", "code", "rest"),
    [
        (ICMPv6DestUnreach(code=4), ICMPV6_DST_UNREACH, 4, 0),
        (ICMPv6PacketTooBig(mtu=1400), ICMPV6_PACKET_TOO_BIG, 0, 1400),
        (ICMPv6TimeExceeded(code=1), ICMPV6_TIME_EXCEEDED, 1, 0),
        (ICMPv6ParamProblem(code=1, ptr=40), ICMPV6_PARAM_PROBLEM, 1, 40),
    ],
)
def test_scapy_built_errors_parse(layer: object, type_: int, code: int, rest: int) -> None:
    msg = ip_payload(IPv6(src=S, dst=D) / layer / QUOTED)
    v = Icmpv6View.checked(msg, pseudo=pseudo(msg))
    assert (v.type, v.code, v.rest, v.is_error) == (type_, code, rest, True)
    assert bytes(v.quoted) == QUOTED
    assert quoted_flow(v.quoted) == (17, DST, SRC, 5353, 53)


def test_scapy_built_echo_and_ndp_parse() -> None:
    msg = ip_payload(IPv6(src=S, dst=D) / ICMPv6EchoReply(id=9, seq=65535, data=b"abc"))
    v = Icmpv6View.checked(msg, pseudo=pseudo(msg))
    assert (v.type, v.ident, v.seq, bytes(v.data)) == (ICMPV6_ECHO_REPLY, 9, 65535, b"abc")
    # NDP parses generically, for ndp.py.
    ns = ip_payload(IPv6(src=S, dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt=D))
    v = Icmpv6View.checked(ns, pseudo=pseudo(ns, SRC, parse_ip("ff02::1:ff00:2")))
    assert (v.type, v.code, v.rest, bytes(v.body)) == (ICMPV6_NEIGHBOR_SOLICIT, 0, 0, DST)
    assert not v.is_error


def _scapy_recomputes(msg: bytes, layer_cls: type) -> object:
    return dissect_icmpv6(msg, S, D)[layer_cls]


def test_emitted_dissects_in_scapy() -> None:
    msg = build_echo_request(77, 3, b"data" * 5, src=SRC, dst=DST)
    layer = _scapy_recomputes(msg, ICMPv6EchoRequest)
    assert (layer.id, layer.seq, layer.data) == (77, 3, b"data" * 5)
    msg = build_echo_reply(77, 3, b"x", src=SRC, dst=DST)
    layer = _scapy_recomputes(msg, ICMPv6EchoReply)
    assert (layer.id, layer.seq, layer.data) == (77, 3, b"x")


@pytest.mark.parametrize(
    ("type_", "code", "rest", "layer_cls", "attr"),
    [
        (ICMPV6_DST_UNREACH, UNREACH_PORT, 0, ICMPv6DestUnreach, None),
        (ICMPV6_PACKET_TOO_BIG, 0, 1280, ICMPv6PacketTooBig, "mtu"),
        (ICMPV6_TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY, 0, ICMPv6TimeExceeded, None),
        (ICMPV6_PARAM_PROBLEM, PARAM_UNRECOGNIZED_NEXT_HEADER, 6, ICMPv6ParamProblem, "ptr"),
    ],
)
def test_emitted_errors_dissect_in_scapy(
    type_: int, code: int, rest: int, layer_cls: type, attr: str | None
) -> None:
    msg = build_icmpv6_error(type_, code, QUOTED, src=SRC, dst=DST, rest=rest)
    layer = _scapy_recomputes(msg, layer_cls)
    assert (layer.type, layer.code) == (type_, code)
    if attr:
        assert getattr(layer, attr) == rest
    inner = layer.payload  # scapy's IPerror6
    assert (inner.src, inner.dst, inner.payload.sport) == (D, S, 5353)  # UDPerror


def test_error_quote_fits_minimum_mtu() -> None:
    """RFC 4443 §2.4 (c)."""
    big = bytes(IPv6(src=D, dst=S) / UDP(sport=1, dport=2) / (b"q" * 3000))
    msg = build_icmpv6_error(ICMPV6_DST_UNREACH, UNREACH_PORT, big, src=SRC, dst=DST)
    assert len(msg) == ICMPV6_HEADER_LEN + ICMPV6_MAX_QUOTE
    assert IPV6_HEADER_LEN + len(msg) == IPV6_MIN_MTU
    v = Icmpv6View.checked(msg, pseudo=pseudo(msg))
    assert bytes(v.quoted) == big[:ICMPV6_MAX_QUOTE]
    assert quoted_flow(v.quoted) == (17, DST, SRC, 1, 2)
    with pytest.raises(ValueError):
        build_icmpv6_error(ICMPV6_ECHO_REQUEST, 0, big, src=SRC, dst=DST)


def test_build_generic() -> None:
    msg = build_icmpv6(ICMPV6_NEIGHBOR_SOLICIT, 0, DST, src=SRC, dst=parse_ip("ff02::1:ff00:2"))
    assert msg == ip_payload(IPv6(src=S, dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt=D))


# --- quoted_flow ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pkt", "flow"),
    [
        (IPv6(src=S, dst=D) / TCP(sport=80, dport=443), (6, SRC, DST, 80, 443)),
        (
            IPv6(src=S, dst=D)
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrRouting(type=5, segleft=0)
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrFragment(offset=0, m=1)
            / UDP(sport=7, dport=9),
            (17, SRC, DST, 7, 9),
        ),
        (IPv6(src=S, dst=D) / IPv6ExtHdrFragment(offset=3, nh=6) / bytes(20), (6, SRC, DST, 0, 0)),
        (IPv6(src=S, dst=D) / ICMPv6EchoRequest(), (58, SRC, DST, 0, 0)),
        (
            IPv6(src=S, dst=D, nh=51)
            / bytes.fromhex("110100000000000100000002")
            / UDP(sport=3, dport=4),
            (17, SRC, DST, 3, 4),
        ),
    ],
)
def test_quoted_flow(pkt: IPv6, flow: tuple) -> None:
    assert quoted_flow(bytes(pkt)) == flow


@pytest.mark.parametrize(
    "data",
    [
        bytes(IPv6(src=S, dst=D) / UDP())[:39],  # shorter than the IPv6 header
        b"\x40" + bytes(IPv6(src=S, dst=D) / UDP())[1:],  # version 4
        bytes(IPv6(src=S, dst=D) / UDP())[:43],  # ports cut
        bytes(IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt() / UDP())[:41],  # cut in the chain
        bytes(IPv6(src=S, dst=D) / IPv6ExtHdrDestOpt(nh=60) / IPv6ExtHdrDestOpt(nh=60))
        + bytes.fromhex("3c00000000000000") * 20,  # too long a chain
    ],
)
def test_quoted_flow_unusable(data: bytes) -> None:
    assert quoted_flow(data) is None


# --- hypothesis -------------------------------------------------------------

headers = st.builds(
    Icmpv6Header,
    type=st.integers(0, 255),
    code=st.integers(0, 255),
    checksum=st.integers(0, 0xFFFF),
    rest=st.integers(0, 0xFFFFFFFF),
)


@given(headers)
def test_roundtrip(h: Icmpv6Header) -> None:
    buf = bytearray(ICMPV6_HEADER_LEN)
    h.emit(buf)
    assert Icmpv6Header.parse(buf) == h


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_built_messages_verify(type_: int, code: int, body: bytes, rest: int) -> None:
    msg = build_icmpv6(type_, code, body, src=SRC, dst=DST, rest=rest)
    v = Icmpv6View.checked(msg, pseudo=pseudo(msg))
    assert (v.type, v.code, v.rest, bytes(v.body)) == (type_, code, rest, body)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        v = Icmpv6View.checked(data, pseudo=pseudo(data))
    except MalformedPacket:
        return
    v.header().summary()
    _ = (v.summary(), v.quoted, v.mtu, v.pointer, v.ident, v.seq, v.data, v.is_error)


@given(st.binary(max_size=160))
def test_quoted_flow_never_raises(data: bytes) -> None:
    quoted_flow(b"\x60" + data)
    quoted_flow(data)
