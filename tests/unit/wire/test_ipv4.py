"""IPv4 codec: golden bytes, every Drop reason, scapy as oracle, hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import (
    IP,
    UDP,
    IPOption_EOL,
    IPOption_LSRR,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_Timestamp,
    fragment,
)

from shardnet.common.addr import parse_ip
from shardnet.common.checksum import checksum
from shardnet.common.wire.errors import Drop, IcmpHintKind, MalformedPacket
from shardnet.common.wire.ipv4 import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_HEADER_LEN,
    Ipv4Header,
    Ipv4View,
)

from .helpers import assert_drop, scapy_checksum

SRC, DST = parse_ip("198.18.0.1"), parse_ip("198.18.0.2")
# 198.18.0.1 > 198.18.0.2, id 1, DF, UDP 4000 > 7 "hi"; from scapy.
GOLDEN = bytes.fromhex("4500001e000140004011aea6c6120001c61200020fa00007000afba16869")
GOLDEN_HDR = Ipv4Header(SRC, DST, IPPROTO_UDP, 64, 0, 1, True, False, 0, 30, 0xAEA6)
# The same with a Router Alert option (RFC 2113), id 1, no DF; from scapy.
GOLDEN_OPT = bytes.fromhex("46000022000100004011599ec6120001c6120002940400000fa00007000afba16869")


def test_constants() -> None:
    assert (IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP) == (1, 6, 17)


def test_deconstruct() -> None:
    v = Ipv4View.checked(GOLDEN)
    assert (v.header_len, v.tos, v.dscp, v.ecn, v.total_length) == (20, 0, 0, 0, 30)
    assert (v.ident, v.df, v.mf, v.frag_offset, v.is_fragment) == (1, True, False, 0, False)
    assert (v.ttl, v.protocol, v.checksum, v.src, v.dst) == (64, 17, 0xAEA6, SRC, DST)
    assert bytes(v.options) == b""
    assert bytes(v.payload) == GOLDEN[20:]
    assert v.fields() == (0x45, 0, 30, 1, 0x4000, 64, 17, 0xAEA6, SRC, DST)


def test_construct() -> None:
    buf = bytearray(GOLDEN)
    buf[:20] = bytes(20)
    h = Ipv4Header(SRC, DST, IPPROTO_UDP, ident=1, df=True, total_length=30)
    assert h.emit(buf) == IPV4_HEADER_LEN
    assert bytes(buf) == GOLDEN
    assert h.checksum == 0xAEA6


def test_parse() -> None:
    assert Ipv4Header.parse(GOLDEN) == GOLDEN_HDR


def test_emit() -> None:
    buf = bytearray(24)
    assert GOLDEN_HDR.emit(buf, 2, compute_checksum=False) == 20
    assert bytes(buf[2:22]) == GOLDEN[:20]


def test_options_golden() -> None:
    v = Ipv4View.checked(GOLDEN_OPT)
    assert v.header_len == 24
    assert bytes(v.options) == b"\x94\x04\x00\x00"
    assert bytes(v.payload) == GOLDEN_OPT[24:]
    h = v.header()
    assert h.options == b"\x94\x04\x00\x00" and h.header_len == 24
    buf = bytearray(len(GOLDEN_OPT))
    buf[24:] = GOLDEN_OPT[24:]
    h.checksum = 0
    assert h.emit(buf) == 24
    assert bytes(buf) == GOLDEN_OPT


def test_options_are_padded_with_eol() -> None:
    h = Ipv4Header(SRC, DST, IPPROTO_UDP, options=b"\x01\x94\x04\x00\x00", total_length=28)
    assert h.header_len == 28
    buf = bytearray(b"\xaa" * 28)
    assert h.emit(buf) == 28
    v = Ipv4View.checked(buf)
    assert bytes(v.options) == b"\x01\x94\x04\x00\x00\x00\x00\x00"


def test_options_too_long_is_api_misuse() -> None:
    with pytest.raises(ValueError):
        Ipv4Header(SRC, DST, IPPROTO_UDP, options=b"\x01" * 41).emit(bytearray(64))


def test_trailing_ethernet_padding_is_cut() -> None:
    v = Ipv4View.checked(GOLDEN + bytes(16))
    assert len(v.buf) == 30
    assert bytes(v.payload) == GOLDEN[20:]


def test_tos_dscp_ecn() -> None:
    h = Ipv4Header(SRC, DST, IPPROTO_UDP, tos=(46 << 2) | 3, total_length=20)
    buf = bytearray(20)
    h.emit(buf)
    v = Ipv4View.checked(buf)
    assert (v.tos, v.dscp, v.ecn) == (0xBB, 46, 3)


def test_checksum_field_zero() -> None:
    """A header whose sum is -0 carries 0x0000 in the field (scapy does the
    same) and verifies."""
    golden = bytes.fromhex("4500001eaea7400040110000c6120001c6120002")  # id 44711, from scapy
    buf = bytearray(30)
    h = Ipv4Header(SRC, DST, IPPROTO_UDP, ident=44711, df=True, total_length=30, checksum=0xFFFF)
    h.emit(buf)
    assert bytes(buf[:20]) == golden and h.checksum == 0
    assert Ipv4View.checked(bytes(buf)).checksum == 0


def test_verify_checksum_can_be_skipped() -> None:
    bad = GOLDEN[:10] + b"\0\0" + GOLDEN[12:]
    assert Ipv4View.checked(bad, verify_checksum=False).checksum == 0


def with_options(options: bytes, payload: bytes = b"", **kw: object) -> bytes:
    """A datagram with raw (possibly invalid) option bytes and a valid checksum."""
    h = Ipv4Header(SRC, DST, IPPROTO_UDP, options=options, **kw)  # type: ignore[arg-type]
    h.total_length = h.header_len + len(payload)
    buf = bytearray(h.total_length)
    buf[h.header_len :] = payload
    h.emit(buf)
    return bytes(buf)


def set_checksum(data: bytes) -> bytes:
    hl = (data[0] & 0x0F) * 4
    head = bytearray(data[:hl])
    head[10:12] = b"\0\0"
    head[10:12] = checksum(head).to_bytes(2, "big")
    return bytes(head) + data[hl:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOLDEN[:19], Drop.IPV4_TRUNCATED),
        (set_checksum(b"\x46" + GOLDEN[1:20]), Drop.IPV4_TRUNCATED),  # IHL 6, 20 bytes
        (b"\x65" + GOLDEN[1:], Drop.IPV4_BAD_VERSION),
        (b"\x44" + GOLDEN[1:], Drop.IPV4_BAD_IHL),
        (set_checksum(GOLDEN[:2] + b"\x00\x13" + GOLDEN[4:]), Drop.IPV4_BAD_TOTAL_LENGTH),
        (set_checksum(GOLDEN[:2] + b"\x00\x1f" + GOLDEN[4:]), Drop.IPV4_BAD_TOTAL_LENGTH),
        (GOLDEN[:10] + b"\xae\xa7" + GOLDEN[12:], Drop.IPV4_BAD_CHECKSUM),
        (with_options(b"\x94\x01\x00\x00"), Drop.IPV4_BAD_OPTIONS),  # length < 2
        (with_options(b"\x07\x08\x04\x00"), Drop.IPV4_BAD_OPTIONS),  # past the header
        (with_options(b"\x01\x01\x01\x83"), Drop.IPV4_BAD_OPTIONS),  # no length byte
        (with_options(b"", b"x" * 30, mf=True, frag_offset=65512), Drop.IPV4_BAD_FRAGMENT),
        (with_options(b"", b"x" * 24, frag_offset=65512), Drop.IPV4_BAD_FRAGMENT),
    ],
)
def test_drop_reasons(data: bytes, reason: Drop) -> None:
    assert_drop(reason, "ipv4", Ipv4View.checked, data)


def test_bad_option_hints_parameter_problem() -> None:
    exc = assert_drop(
        Drop.IPV4_BAD_OPTIONS, "ipv4", Ipv4View.checked, with_options(b"\x01\x07\x09\x04")
    )
    hint = exc.icmp
    assert hint is not None
    assert (hint.kind, hint.code, hint.pointer) == (IcmpHintKind.PARAMETER_PROBLEM, 0, 22)


def test_fragment_reaching_65535_is_accepted() -> None:
    v = Ipv4View.checked(with_options(b"", b"x" * 23, frag_offset=65512))
    assert (v.frag_offset, v.is_fragment, v.mf) == (65512, True, False)


def test_eol_ends_the_option_list() -> None:
    # After EOL the rest is padding, whatever it holds (RFC 791 §3.1).
    v = Ipv4View.checked(with_options(b"\x00\x07\xff\xff"))
    assert bytes(v.options) == b"\x00\x07\xff\xff"


def test_summary() -> None:
    assert GOLDEN_HDR.summary() == "IP 198.18.0.1 > 198.18.0.2 ttl 64 id 1 len 30 proto 17 DF"
    frag = Ipv4Header(SRC, DST, 1, ident=9, mf=True, frag_offset=1480, total_length=1500)
    assert frag.summary() == "IP 198.18.0.1 > 198.18.0.2 ttl 64 id 9 len 1500 proto 1 frag 1480+"
    assert Ipv4View.checked(GOLDEN).summary() == GOLDEN_HDR.summary()


@pytest.mark.parametrize(
    "options",
    [
        [IPOption_Router_Alert()],
        [IPOption_NOP(), IPOption_RR(routers=["198.18.0.9"])],
        [IPOption_Timestamp(flg=1, internet_address="198.18.0.1", timestamp=5)],
        [IPOption_LSRR(routers=["198.18.0.5", "198.18.0.6"]), IPOption_EOL()],
        [IPOption_NOP(), IPOption_RR(routers=["198.18.1.1"] * 9)],  # 40 bytes
    ],
)
def test_scapy_options_parse(options: list) -> None:
    pkt = IP(src="198.18.0.1", dst="198.18.0.2", ttl=9, tos=0x10, id=77, options=options)
    pkt = pkt / UDP(sport=1, dport=2) / b"data"
    raw = bytes(pkt)
    v = Ipv4View.checked(raw + bytes(6))
    again = IP(raw)
    assert v.header_len == again.ihl * 4
    assert bytes(v.options) == raw[20 : again.ihl * 4]
    assert (v.ttl, v.tos, v.ident, v.protocol, v.total_length) == (9, 0x10, 77, 17, len(raw))
    assert bytes(v.payload) == raw[again.ihl * 4 :]
    h = v.header()
    buf = bytearray(raw)
    buf[: h.header_len] = bytes(h.header_len)
    h.emit(buf)
    assert bytes(buf) == raw


def test_scapy_fragments_parse() -> None:
    pkt = IP(src="198.18.0.1", dst="198.18.0.2", id=4242) / UDP(sport=9, dport=9) / (b"z" * 3000)
    frags = fragment(pkt, fragsize=1000)
    assert len(frags) > 2
    data = b""
    for i, f in enumerate(frags):
        raw = bytes(f)
        v = Ipv4View.checked(raw)
        assert v.ident == 4242
        assert v.is_fragment
        assert v.mf == (i < len(frags) - 1)
        assert v.frag_offset == f.frag * 8 == len(data)
        data += bytes(v.payload)
    assert data == bytes(pkt)[20:]
    assert not Ipv4View.checked(bytes(pkt)).is_fragment


def test_emitted_dissects_in_scapy() -> None:
    payload = b"abcdefgh"
    h = Ipv4Header(
        SRC,
        DST,
        IPPROTO_UDP,
        ttl=3,
        tos=0xB8,
        ident=0xBEEF,
        mf=True,
        frag_offset=2960,
        total_length=28 + len(payload),
        options=b"\x01\x94\x04\x00\x00",
    )
    buf = bytearray(h.total_length)
    buf[28:] = payload
    assert h.emit(buf) == 28
    p = IP(bytes(buf))
    assert (p.version, p.ihl, p.tos, p.len, p.id, p.ttl, p.proto) == (4, 7, 0xB8, 36, 0xBEEF, 3, 17)
    assert (str(p.flags), p.frag * 8, p.src, p.dst) == ("MF", 2960, "198.18.0.1", "198.18.0.2")
    assert p.chksum == h.checksum == scapy_checksum(p, IP)  # scapy recomputes the same


# Well-formed option lists: NOPs and type/length/data options, padded to 4.
_option = st.one_of(
    st.just(b"\x01"),
    st.builds(
        lambda t, d: bytes([t, len(d) + 2]) + d,
        st.integers(2, 255),
        st.binary(max_size=8),
    ),
)
options = (
    st.lists(_option, max_size=5)
    .map(b"".join)
    .filter(lambda o: len(o) <= 40)
    .map(lambda o: o + bytes(-len(o) % 4))
)


@st.composite
def headers(draw: st.DrawFn) -> Ipv4Header:
    opts = draw(options)
    payload_len = draw(st.integers(0, 64))
    return Ipv4Header(
        src=draw(st.binary(min_size=4, max_size=4)),
        dst=draw(st.binary(min_size=4, max_size=4)),
        protocol=draw(st.integers(0, 255)),
        ttl=draw(st.integers(0, 255)),
        tos=draw(st.integers(0, 255)),
        ident=draw(st.integers(0, 0xFFFF)),
        df=draw(st.booleans()),
        mf=draw(st.booleans()),
        frag_offset=draw(st.integers(0, (65535 - 64) // 8)) * 8,
        total_length=20 + len(opts) + payload_len,
        checksum=0,
        options=opts,
    )


@given(headers())
def test_roundtrip(h: Ipv4Header) -> None:
    buf = bytearray(h.total_length)
    h.emit(buf)
    assert Ipv4Header.parse(buf) == h


def check_accessors(v: Ipv4View) -> None:
    v.fields()
    h = v.header()
    assert (h.tos, h.total_length, h.ident, h.df, h.mf) == (
        v.tos,
        v.total_length,
        v.ident,
        v.df,
        v.mf,
    )
    assert (h.frag_offset, h.ttl, h.protocol, h.checksum) == (
        v.frag_offset,
        v.ttl,
        v.protocol,
        v.checksum,
    )
    assert (h.src, h.dst, h.options) == (v.src, v.dst, bytes(v.options))
    assert v.header_len + len(v.payload) == v.total_length == len(v.buf)
    assert (v.dscp << 2) | v.ecn == v.tos
    assert v.is_fragment == (v.mf or v.frag_offset != 0)
    v.header().summary()
    v.summary()


@given(st.binary(max_size=80), st.booleans())
def test_arbitrary_bytes_raise_only_malformed(data: bytes, verify: bool) -> None:
    try:
        v = Ipv4View.checked(data, verify_checksum=verify)
    except MalformedPacket:
        return
    check_accessors(v)


@given(st.integers(5, 15), st.binary(min_size=40, max_size=40), st.integers(0, 0xFFFF), st.binary())
def test_garbage_options_raise_only_malformed(
    ihl: int, opts: bytes, word: int, payload: bytes
) -> None:
    hl = ihl * 4
    data = bytearray(bytes([0x40 | ihl]) + GOLDEN[1:20] + opts[: hl - 20] + payload)
    data[2:4] = min(len(data), 0xFFFF).to_bytes(2, "big")
    data[6:8] = word.to_bytes(2, "big")
    data = set_checksum(bytes(data))
    try:
        v = Ipv4View.checked(data)
    except MalformedPacket as exc:
        assert exc.reason in (Drop.IPV4_BAD_OPTIONS, Drop.IPV4_BAD_FRAGMENT)
        return
    check_accessors(v)
